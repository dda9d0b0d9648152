"""Several models behind one router: which sets fit, the preset INI, the models file, GET /models.

Plans are the real planner's over catalog models (no files needed); hostile names, values,
files and server answers are refused in one line or read back exactly."""

from __future__ import annotations

from itertools import combinations
from math import comb
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from deployer.cli import wiring
from deployer.cli.app import app
from deployer.core.errors import DeployerError, InvalidDataFile, InvalidRequest
from deployer.core.fit.multi import (
    ROUTER_OVERHEAD_BYTES,
    check_max_loaded,
    plan_models,
)
from deployer.core.fit.plan import PlanResult, machine_spec
from deployer.core.hardware.profiles import get_profile
from deployer.core.serve.multi_flow import preset_text, render_several
from deployer.core.serve.prepare import RenderOptions
from deployer.core.serve.rendered import load_yaml, undollar
from deployer.core.serve.router import (
    ModelEntry,
    check_model_name,
    parse_models_file,
    parse_models_status,
    preset_section,
    read_preset,
    render_preset,
)
from deployer.core.untrusted import UntrustedValue
from tests.unit.hostile_yaml import hostile_value, random_document
from tests.unit.test_render_quoting import NASTY

CPU = "cpu-x86-2c-8gb"
MODELS = ["qwen2.5-0.5b-instruct", "llama-3.2-1b-instruct", "gemma-3-1b-it", "qwen2.5-3b-instruct"]


def _plan(model: str, profile: str = CPU, ctx: int | None = 4096) -> PlanResult:
    return wiring.plan_for(model, get_profile(profile), quant=None, ctx=ctx, parallel=1,
                           kv_type="f16", backend="llamacpp")  # fmt: skip


@pytest.fixture(scope="module")
def results() -> list[PlanResult]:
    return [_plan(m) for m in MODELS]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_every_set_of_n_is_checked_against_the_host_budget(
    results: list[PlanResult], n: int
) -> None:
    plan = plan_models(MODELS, results, n)
    host = {m: r.chosen.memory.host.total_bytes for m, r in zip(MODELS, results, strict=True)}
    budget = machine_spec(get_profile(CPU)).host_budget_bytes
    assert len(plan.combinations) == comb(len(MODELS), n)
    want = {c: ROUTER_OVERHEAD_BYTES + sum(host[m] for m in c) for c in combinations(MODELS, n)}
    assert {c.names: c.host_bytes for c in plan.combinations} == want
    assert {c.names: c.fits for c in plan.combinations} == {c: v <= budget for c, v in want.items()}
    # The limit's set is the n largest, and no set needs more.
    largest = sorted(MODELS, key=lambda m: -host[m])[:n]
    assert set(plan.largest.names) == set(largest)
    assert plan.memory_request_bytes == max(want.values())
    assert plan.fits == all(v <= budget for v in want.values())


def test_sets_that_overflow_are_named_and_fewer_loaded_fit() -> None:
    # Three 3B-class models with a long context on an 8 GB machine: not all at once.
    names = ["qwen2.5-3b-instruct", "llama-3.2-3b-instruct", "gemma-3-4b-it"]
    res = [_plan(m, ctx=32768) for m in names]
    assert all(r.fits for r in res)
    all_three = plan_models(names, res, 3)
    assert not all_three.fits and not all_three.combinations[0].fits
    one = plan_models(names, res, 1)
    assert one.fits and one.memory_request_bytes < all_three.memory_request_bytes
    d = all_three.as_dict()
    assert d["fits"] is False and d["largest"]["fits"] is False
    assert [m["name"] for m in all_three.models_list()] == names


def test_gpu_sets_add_up_per_device() -> None:
    names = ["qwen2.5-7b-instruct", "llama-3.1-8b-instruct"]
    res = [_plan(m, "nvidia-l4-24gb", ctx=8192) for m in names]
    plan = plan_models(names, res, 2)
    per_dev = [sum(r.chosen.memory.devices[0].total_bytes for r in res)]
    assert list(plan.largest.device_bytes) == per_dev
    assert plan.largest.fits == (per_dev[0] <= plan.device_budget_bytes[0]) and (
        plan.largest.host_bytes <= plan.host_budget_bytes
    )


def test_max_loaded_and_names_are_checked(results: list[PlanResult]) -> None:
    assert check_max_loaded(None, 3) == 3
    for bad in (0, -1, 4):
        with pytest.raises(InvalidRequest):
            check_max_loaded(bad, 3)
    with pytest.raises(InvalidRequest, match="same name"):
        plan_models(["a", "a"], results[:2], 1)


NAME_ALPHABET = st.sampled_from([*"aZ09._-", "[", "]", "=", ";", "#", " ", "\n", "\r", "/", "é"])


@given(st.lists(NAME_ALPHABET, min_size=0, max_size=12).map("".join))
def test_model_names_are_plain_words_or_refused(name: str) -> None:
    try:
        check_model_name(name)
    except InvalidRequest as exc:
        assert "\n" not in exc.message()
        return
    assert not set(name) & set("[]=;# \n\r/") and name


@given(
    st.lists(NAME_ALPHABET, min_size=1, max_size=12).map("".join),
    st.lists(st.sampled_from([*NASTY, "/models/x.gguf", "4096", "on"]), max_size=3).map("".join),
)
def test_preset_values_read_back_exactly_or_are_refused(name: str, value: str) -> None:
    sections = {name: [("model", "/models/m.gguf"), ("chat-template", value)]}
    try:
        text = render_preset(sections)
    except (InvalidRequest, UntrustedValue) as exc:
        assert "\n" not in exc.message()
        return
    assert read_preset(text) == {name: {"model": "/models/m.gguf", "chat-template": value}}
    # One section header, and no line a value could have started.
    assert sum(line.startswith("[") for line in text.splitlines()) == 1


@pytest.mark.parametrize("value", ["a\nb", "x [y]", "a=b", "p ; c", "p # c", " lead", ""])
def test_ini_hostile_values_are_refused(value: str) -> None:
    with pytest.raises(UntrustedValue):
        render_preset({"m": [("model", value)]})


def test_preset_carries_each_models_planned_arguments(results: list[PlanResult]) -> None:
    plan = plan_models(MODELS[:2], results[:2], 1)
    got = read_preset(preset_text(plan))
    assert list(got) == MODELS[:2]
    for name, r in zip(MODELS[:2], results[:2], strict=True):
        s = got[name]
        assert s["model"] == f"/models/{name}.gguf"
        assert int(s["c"]) == r.chosen.settings.ctx and int(s["np"]) == r.chosen.settings.parallel
        assert not {"host", "port", "alias", "api-key-file", "m"} & set(s)


def test_preset_section_turns_flags_into_keys() -> None:
    args = ["-m", "/x", "--host", "h", "-c", "8", "--no-jinja", "--fit", "off", "--metrics"]
    assert preset_section(args) == [("c", "8"), ("no-jinja", "true"), ("fit", "off"),
                                    ("metrics", "true")]  # fmt: skip
    with pytest.raises(InvalidRequest):
        preset_section(["stray"])


def test_models_file_valid_and_hostile() -> None:
    ok = "models:\n  - model: demo\n  - model: /m/a.gguf\n    name: small\n"
    assert parse_models_file(ok, "f.yaml") == [ModelEntry("demo", "demo"),
                                               ModelEntry("small", "/m/a.gguf")]  # fmt: skip
    hostile = [
        "models: []\n",
        "models:\n  - model: demo\n    extra: 1\n",
        "models:\n  - model: demo\n    name: 'a]b'\n",
        'models:\n  - model: demo\n    name: "a\\nb"\n',
        'models:\n  - model: "x\\ny.gguf"\n    name: ok\n',
        "- demo\n",
        "models: " + "[{model: demo}, " * 9 + "]\n",
        "models:\n  - model: '{{ evil }}'\n    name: ok\n",
        "x" * 70_000,
    ]
    for text in hostile:
        with pytest.raises((InvalidRequest, InvalidDataFile, UntrustedValue)) as exc:
            parse_models_file(text, "f.yaml")
        assert "\n" not in exc.value.message()


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=20,
))  # fmt: skip
def test_models_status_never_raises_on_any_json(body: Any) -> None:
    for state in parse_models_status(body):
        check_model_name(state.name)
        assert state.status in {"loaded", "loading", "unloaded", "sleeping", "downloading",
                                "unknown"}  # fmt: skip


def test_models_status_reads_the_routers_answer() -> None:
    body = {"data": [
        {"id": "demo", "status": {"value": "loaded", "args": []}},
        {"id": "b", "status": {"value": "exploded"}},
        {"id": "bad\nname", "status": {"value": "loaded"}},
        "junk",
    ]}  # fmt: skip
    assert [s.as_dict() for s in parse_models_status(body)] == [
        {"name": "demo", "status": "loaded"}, {"name": "b", "status": "unknown"},
    ]  # fmt: skip


@given(st.lists(st.sampled_from([p for p in NASTY if p.isprintable()] + ["/m/a"]), min_size=1,
                max_size=4).map("".join))  # fmt: skip
def test_hostile_model_paths_land_literally_in_compose(path: str) -> None:
    res = [_plan("qwen2.5-0.5b-instruct"), _plan("gemma-3-1b-it")]
    plan = plan_models(["a", "b"], res, 1)
    paths = [Path("/w") / (path + ".gguf"), Path("/w/b.gguf")]
    try:
        bundle = render_several(plan, name="duo", paths=paths, options=RenderOptions())
    except DeployerError as exc:
        assert "\n" not in exc.message()
        return
    svc = undollar(load_yaml(bundle.files["docker-compose.yml"])["services"]["llama-server"])
    assert [v["source"] for v in svc["volumes"]] == [str(p) for p in paths] + ["./models.ini"]
    assert all(v["read_only"] is True for v in svc["volumes"])


def test_plan_cli_several_models_adds_models_and_keeps_single_output() -> None:
    import json

    runner = CliRunner()
    one = runner.invoke(app, ["plan", MODELS[0], "--profile", CPU, "--json"])
    two = runner.invoke(app, ["plan", *MODELS[:2], "--profile", CPU, "--json", "--ctx", "4096"])
    assert one.exit_code == 0 and two.exit_code == 0, two.stderr
    single, several = json.loads(one.stdout), json.loads(two.stdout)
    assert "models" not in single and "router" not in single
    assert set(single) - {"load", "traffic", "api_comparison"} <= set(several)
    assert [m["name"] for m in several["models"]] == MODELS[:2]
    assert several["router"]["max_loaded"] == 2
    bad = runner.invoke(app, ["plan", *MODELS[:2], "--profile", CPU, "--max-loaded", "3"])
    assert bad.exit_code == 2 and "--max-loaded 3" in bad.stderr


@pytest.mark.parametrize("bad", ["/m/a;b.gguf", "/m/a#b.gguf", "/m/a=b.gguf", "/m/[a].gguf"])
def test_systemd_preset_holds_host_paths_and_refuses_ini_syntax(bad: str) -> None:
    res = [_plan("qwen2.5-0.5b-instruct"), _plan("gemma-3-1b-it")]
    plan = plan_models(["a", "b"], res, 1)
    opts = RenderOptions(target="systemd")
    good = render_several(plan, name="duo", paths=[Path("/m/a.gguf"), Path("/m/b.gguf")],
                          options=opts)  # fmt: skip
    got = read_preset(good.files["models.ini"])
    assert [got[n]["model"] for n in ("a", "b")] == ["/m/a.gguf", "/m/b.gguf"]
    assert good.native[1:3] == ["--models-preset", "/etc/deployer/duo/models.ini"]
    with pytest.raises(UntrustedValue) as exc:
        render_several(plan, name="duo", paths=[Path(bad), Path("/m/b.gguf")], options=opts)
    assert "\n" not in exc.value.message()


def test_k8s_router_copies_every_model_and_the_preset(results: list[PlanResult]) -> None:
    plan = plan_models(MODELS[:2], results[:2], 1)
    paths = [Path("/m/a.gguf"), Path("/m/b.gguf")]
    b = render_several(plan, name="duo", paths=paths, options=RenderOptions(target="k8s"))
    dep = load_yaml(b.files["deployment.yaml"])
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert undollar(container["args"])[:4] == ["--models-preset", "/models/models.ini",
                                               "--models-max", "1"]  # fmt: skip
    want = [f"kubectl cp /m/{x}.gguf duo-model-loader:/models/{n}.gguf"
            for x, n in (("a", MODELS[0]), ("b", MODELS[1]))]  # fmt: skip
    readme = b.files["README.md"]
    assert all(w in readme for w in want), readme
    assert "kubectl cp models.ini duo-model-loader:/models/models.ini" in readme
    total = sum(r.chosen.facts.weights.file_bytes for r in results[:2])
    pvc = load_yaml(b.files["pvc.yaml"])
    size_gib = int(pvc["spec"]["resources"]["requests"]["storage"].removesuffix("Gi"))
    assert size_gib * 2**30 >= total * 1.1
    with pytest.raises(InvalidRequest):  # launchd: a Mac, and no router there
        render_several(plan, name="duo", paths=paths, options=RenderOptions(target="launchd"))


def test_cli_refuses_bad_several_requests_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    huge = tmp_path / "huge.yaml"
    huge.write_text("models:\n" + "  - model: demo\n" * 6000)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("models:\n  - model: demo\n    name: 'x;y'\n")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00models")
    cases = [
        (["deploy", "demo", "demo", "--profile", CPU, "--dry-run"], "--name"),
        (["deploy", "demo", "demo", "--name", "duo", "--profile", CPU, "--dry-run"], "same name"),
        (["deploy", "demo", "--models-file", str(bad_yaml), "--name", "d", "--profile", CPU],
         "not both"),
        (["deploy", "--models-file", str(tmp_path / "none.yaml"), "--name", "d"], "cannot read"),
        (["plan", "--models-file", str(huge), "--profile", CPU], "larger than"),
        (["plan", "--models-file", str(binary), "--profile", CPU], "not UTF-8"),
        (["plan", "--models-file", str(bad_yaml), "--profile", CPU], "invalid models[0].name"),
        (["deploy", "demo", "qwen2.5-0.5b-instruct", "--name", "d", "--backend", "ollama",
          "--profile", CPU, "--dry-run"], "--backend llamacpp"),
        (["render", "demo", "qwen2.5-0.5b-instruct", "--name", "d", "--target", "launchd",
          "--profile", CPU], "launchd"),
    ]  # fmt: skip
    for args, words in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.stdout, r.stderr)
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr


def test_models_file_settings_reach_each_models_plan_and_preset(tmp_path: Path) -> None:
    from deployer.core.serve.multi_flow import plan_several
    from deployer.core.serve.prepare import PlanInputs

    text = (
        "models:\n"
        f"  - {{model: {MODELS[0]}, name: small, ctx: 2048}}\n"
        f"  - {{model: {MODELS[1]}, quant: Q8_0}}\n"
    )
    entries = parse_models_file(text, "f.yaml")
    plan = plan_several(entries, get_profile(CPU), PlanInputs(ctx=4096), wiring.plan_for, None)
    assert [r.chosen.settings.ctx for r in plan.results] == [2048, 4096]
    assert plan.results[1].chosen.facts.quant == "Q8_0"
    ini = read_preset(preset_text(plan))
    assert ini["small"]["c"] == "2048" and ini[MODELS[1]]["c"] == "4096"


@given(hostile_value)
def test_models_file_hostile_values_are_refused_in_one_line(value: str) -> None:
    for field in ("model", "name", "ctx", "quant"):
        text = f"models:\n  - model: demo\n    {field}: {value}\n"
        if field == "model":
            text = f"models:\n  - model: {value}\n"
        try:
            entries = parse_models_file(text, "f.yaml")
        except DeployerError as exc:
            assert "\n" not in exc.message()
            continue
        for e in entries:
            check_model_name(e.name)
            assert "\n" not in e.ref_text and (e.quant is None or "\n" not in e.quant)


@given(random_document())
def test_any_document_as_a_models_file_is_refused_or_valid(text: str) -> None:
    try:
        entries = parse_models_file(text, "f.yaml")
    except DeployerError as exc:
        assert "\n" not in exc.message()
        return
    assert 1 <= len(entries) <= 8


@pytest.mark.parametrize("verb", ["plan", "render", "deploy"])
def test_lora_with_several_models_is_one_line_refusal(verb: str, tmp_path: Path) -> None:
    extra = ["--out", str(tmp_path / "out")] if verb == "render" else []
    extra += ["--name", "two"] if verb != "plan" else []
    r = CliRunner().invoke(
        app, [verb, "demo", "demo", "--lora", str(tmp_path / "a.gguf"),
              "--profile", "cpu-x86-2c-8gb", *extra],
    )  # fmt: skip
    assert r.exit_code == 2
    assert r.stderr.startswith("error: --lora applies to one model") and r.stderr.count("\n") == 1


def test_a_fifo_or_folder_as_models_file_is_one_line_not_a_hang(tmp_path: Path) -> None:
    import os
    import threading

    from deployer.adapters.router_files import read_models_file

    fifo = tmp_path / "models.yaml"
    os.mkfifo(fifo)  # nobody writes it: a blocking open would hang the command here
    errors: list[str] = []

    def read(path: Path) -> None:
        try:
            read_models_file(path)
        except InvalidRequest as exc:
            errors.append(exc.message())

    for path in (fifo, tmp_path):
        t = threading.Thread(target=read, args=(path,), daemon=True)
        t.start()
        t.join(timeout=5)
        if t.is_alive():  # release the blocked open, then fail
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            t.join(timeout=5)
            pytest.fail(f"reading {path} as a models file hung")
    assert len(errors) == 2
    assert all(str(p) in e for p, e in zip((fifo, tmp_path), errors, strict=True))


@pytest.mark.parametrize(
    ("command", "extra"), [("plan", []), ("render", ["--out", "OUT"]), ("deploy", ["--dry-run"])]
)
def test_max_loaded_beyond_one_model_is_refused_not_ignored(
    command: str, extra: list[str], tmp_path: Path
) -> None:
    extra = [str(tmp_path / "out") if e == "OUT" else e for e in extra]
    args = [command, "demo", "--max-loaded", "3", "--profile", "cpu-x86-2c-8gb", *extra]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 2, out.output
    assert "--max-loaded 3" in out.output and len(out.output.strip().splitlines()) <= 2
    assert not (tmp_path / "out").exists()


def test_a_router_bundle_has_no_scrape_config_and_top_refuses_it(
    results: list[PlanResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A router answers /metrics per model only (?model=NAME, which also loads it): a scrape
    # config for the server would fail, so none is written, and `top` says why in one line.
    plan = plan_models(MODELS[:2], results[:2], 1)
    b = render_several(plan, name="duo", paths=[Path("/m/a.gguf"), Path("/m/b.gguf")],
                       options=RenderOptions())  # fmt: skip
    assert "prometheus.yml" not in b.files and "grafana-dashboard.json" not in b.files
    from deployer.adapters.router_files import FilePresetStore
    from deployer.core.state.records import DeploymentRecord

    FilePresetStore().write_preset("duo", b.files["models.ini"])
    rec = DeploymentRecord(name="duo", model="a", quant="Q4_K_M", backend="llamacpp",
                           runtime="container", endpoint="http://127.0.0.1:18080", port=18080,
                           created_at="2025-01-01T00:00:00+00:00")  # fmt: skip
    wiring.record_store().save(rec)
    r = CliRunner().invoke(app, ["top", "duo", "--once"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "router of several models" in r.stderr
