"""LoRA adapters: --lora parsed, an adapter GGUF's header read and checked against the base,
its memory counted where llama.cpp puts it, rendered for llama-server and Ollama, recorded."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from deployer.adapters.adapter_files import AdapterFiles
from deployer.adapters.gguf_files import read_header
from deployer.cli import wiring
from deployer.cli.app import app
from deployer.core.errors import AdapterMismatch, DeployerError, GGUFReadError
from deployer.core.fit.plan import PlanResult
from deployer.core.hardware.profiles import get_profile
from deployer.core.model.adapter import (
    Adapter,
    AdapterFacts,
    HubAdapterRef,
    adapter_facts,
    check_adapter,
    load_adapters,
    parse_lora,
)
from deployer.core.model.ref import LocalRef
from deployer.core.serve.render import render_plan
from deployer.core.serve.rendered import undollar
from deployer.core.state.record_fields import FieldInvalid, check_fields
from deployer.core.untrusted import UntrustedValue
from tests.unit.lora_gguf import DEMO_EMBD, DEMO_OUT, pair_bytes, write_adapter
from tests.unit.syntax_readers import modelfile_commands, systemd_exec_argv, systemd_settings
from tests.unit.test_render_quoting import NASTY

BASE = "gemma-3-270m-it"  # the catalog's entry for the demo's architecture and shape
CPU, GPU, MAC = "cpu-x86-2c-8gb", "nvidia-a10g-24gb", "apple-m2-ultra-192gb"


def _facts(path: Path) -> AdapterFacts:
    return adapter_facts(read_header(path), str(path))


@pytest.fixture
def adapter(tmp_path: Path) -> Adapter:
    path = write_adapter(tmp_path / "style.gguf", layers=range(18), rank=4)
    return Adapter(str(path), path, 0.5, _facts(path))


def _plan(
    profile: str, adapters: tuple[Adapter, ...] = (), backend: str = "llamacpp"
) -> PlanResult:
    return wiring.plan_for(
        BASE, get_profile(profile), quant=None, ctx=4096, parallel=1, kv_type="f16",
        backend=backend, adapters=adapters,
    )  # fmt: skip


# --- --lora parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "scale"),
    [
        ("a.gguf", "a.gguf", 1.0),
        ("/x/b.gguf:0.25", "/x/b.gguf", 0.25),
        ("c.GGUF:-1", "c.GGUF", -1.0),
        ("d.gguf:1e-1", "d.gguf", 0.1),
    ],
)
def test_local_lora_with_and_without_scale(text: str, where: str, scale: float) -> None:
    req = parse_lora(text)
    assert req.ref == LocalRef(where) and req.scale == scale


def test_hub_lora_forms() -> None:
    assert parse_lora("hf://org/repo").ref == HubAdapterRef("org/repo", None, None, "hf://org/repo")
    req = parse_lora("hf://org/repo/sub/x.gguf@main:0.5")
    assert req.ref == HubAdapterRef(
        "org/repo", "sub/x.gguf", "main", "hf://org/repo/sub/x.gguf@main"
    )
    assert req.scale == 0.5


@pytest.mark.parametrize(
    "text",
    ["a.txt", "a.gguf:nan", "a.gguf:inf", "a.gguf:1000", "a.gguf:0x1", "a.gguf:", "hf://org",
     "hf://org/repo/../x.gguf", "hf://org/repo/x.bin", "a.gguf\n:1", "hf://o/r@:1"],
)  # fmt: skip
def test_bad_lora_is_one_line_refusal(text: str) -> None:
    with pytest.raises(UntrustedValue) as exc:
        parse_lora(text)
    assert "\n" not in exc.value.message()


@given(st.text(max_size=40) | st.lists(st.sampled_from(NASTY), max_size=6).map("".join))
def test_any_lora_text_parses_or_is_refused_in_one_line(text: str) -> None:
    try:
        req = parse_lora(text)
    except DeployerError as exc:
        assert "\n" not in exc.message() and "\r" not in exc.message()
        return
    assert req.ref.text.lower().endswith(".gguf") or req.ref.text.startswith("hf://")
    assert -100 <= req.scale <= 100


# --- the header ----------------------------------------------------------------------------------


def test_header_facts_count_every_pair_aligned(tmp_path: Path) -> None:
    path = write_adapter(tmp_path / "a.gguf", layers=[0, 3, 5], targets=("attn_q", "attn_k"))
    f = _facts(path)
    per_layer = pair_bytes(4, DEMO_EMBD, DEMO_OUT["attn_q"]) + pair_bytes(4, DEMO_EMBD, 256)
    assert (f.architecture, f.rank, f.alpha, f.pairs) == ("gemma3", 4, 4.0, 6)
    assert f.layer_bytes == (per_layer, 0, 0, per_layer, 0, per_layer)
    assert f.tensor_bytes == 3 * per_layer and f.other_bytes == 0
    assert f.n_embd == DEMO_EMBD and f.n_layer is None


def test_pairs_outside_blocks_are_host_bytes(tmp_path: Path) -> None:
    extra = {"output.weight": ((4, DEMO_EMBD), (1000, 4))}
    f = _facts(write_adapter(tmp_path / "o.gguf", layers=[0], extra=extra))
    assert f.other_bytes == pair_bytes(4, DEMO_EMBD, 1000)


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"general_type": "model"}, "not an adapter file"),
        ({"adapter_type": "ia3"}, "adapter.type is 'ia3'"),
        ({"extra": {"blk.0.attn_q.weight": ((4, 640), (1024, 8))}}, "rank 4 != lora_b 8"),
        ({"layers": []}, "no lora_a/lora_b tensors"),
        ({"layers": [0], "extra": {"blk.1.ffn_down.weight": ((4, 2048), (512, 4))}},
         "disagree on the embedding width"),
        ({"block_count": 0}, "block_count is 0"),
    ],
)  # fmt: skip
def test_header_llama_cpp_would_refuse_is_refused(
    tmp_path: Path, kw: dict[str, Any], problem: str
) -> None:
    path = write_adapter(tmp_path / "bad.gguf", **kw)
    with pytest.raises(GGUFReadError) as exc:
        AdapterFiles().facts(path, "bad.gguf")
    assert problem in exc.value.message() and "\n" not in exc.value.message()


def test_unpaired_or_misnamed_tensor_is_refused(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    for names, problem in (
        (["blk.0.attn_q.weight.lora_a"], "missing one of"),
        (["blk.0.attn_q.weight"], "not a lora_a or lora_b tensor"),
    ):
        path = tmp_path / "x.gguf"
        w = gguf.GGUFWriter(str(path), "gemma3")
        w.add_string("general.type", "adapter")
        w.add_string("adapter.type", "lora")
        for n in names:
            w.add_tensor(n, np.zeros((4, 640), dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with pytest.raises(GGUFReadError, match=problem):
            AdapterFiles().facts(path, "x.gguf")


def test_cut_adapter_file_is_refused(tmp_path: Path) -> None:
    path = write_adapter(tmp_path / "cut.gguf")
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(GGUFReadError):
        AdapterFiles().facts(path, "cut.gguf")


def test_missing_adapter_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DeployerError, match="LoRA adapter") as exc:
        load_adapters([str(tmp_path / "none.gguf:0.5")], AdapterFiles())
    assert "none.gguf" in exc.value.message()


# --- matching the base ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "what", "values"),
    [
        ({"arch": "llama"}, "architecture", ("llama", "gemma3")),
        ({"n_embd": 512}, "embedding width", ("512", "640")),
        ({"layers": range(20)}, "layer count", ("20", "18")),
        ({"layers": [0], "block_count": 26}, "layer count", ("26", "18")),
        # block_count says 18, as the base, but a tensor names block 19: it crashed the plan
        ({"layers": [0, 19], "block_count": 18}, "layer count", ("20", "18")),
    ],
)
def test_mismatch_is_one_line_naming_both(
    tmp_path: Path, kw: dict[str, Any], what: str, values: tuple[str, str]
) -> None:
    path = write_adapter(tmp_path / "m.gguf", **kw)
    adapter = Adapter(str(path), path, 1.0, _facts(path))
    with pytest.raises(AdapterMismatch) as exc:
        _plan(CPU, (adapter,))
    msg = exc.value.message()
    assert "\n" not in msg and str(path) in msg and BASE in msg and what in msg
    assert f"is {values[0]}, the base's is {values[1]}" in msg


def test_matching_adapter_passes(adapter: Adapter) -> None:
    base = _plan(CPU).chosen.facts
    check_adapter(base, adapter)  # no error


# --- memory --------------------------------------------------------------------------------------


def test_cpu_plan_holds_the_adapter_on_the_host(adapter: Adapter) -> None:
    without, with_ = _plan(CPU), _plan(CPU, (adapter,))
    grew = with_.chosen.memory.host.weights_bytes - without.chosen.memory.host.weights_bytes
    assert grew == adapter.facts.tensor_bytes  # anonymous, whatever the load mode
    total = with_.as_dict()["memory"]["total_bytes"] - without.as_dict()["memory"]["total_bytes"]
    assert total >= adapter.facts.tensor_bytes


def test_gpu_plan_puts_each_pair_on_its_layers_device(adapter: Adapter) -> None:
    without, with_ = _plan(GPU), _plan(GPU, (adapter,))
    dev0, dev1 = without.chosen.memory.devices[0], with_.chosen.memory.devices[0]
    assert with_.chosen.memory.n_gpu_layers == 19  # all 18 blocks and the output
    assert dev1.weights_bytes - dev0.weights_bytes == adapter.facts.tensor_bytes
    assert with_.chosen.memory.host.weights_bytes == without.chosen.memory.host.weights_bytes


def test_two_adapters_add_up(tmp_path: Path, adapter: Adapter) -> None:
    other_path = write_adapter(tmp_path / "b.gguf", layers=[1, 2], seed=3)
    other = Adapter(str(other_path), other_path, 1.0, _facts(other_path))
    one, two = _plan(CPU, (adapter,)), _plan(CPU, (adapter, other))
    grew = two.chosen.memory.host.weights_bytes - one.chosen.memory.host.weights_bytes
    assert grew == other.facts.tensor_bytes


def test_plan_json_lists_adapters_and_keeps_every_other_field(adapter: Adapter) -> None:
    plain, with_ = _plan(CPU).as_dict(), _plan(CPU, (adapter,)).as_dict()
    assert set(with_) == set(plain) and plain["adapters"] == []
    (entry,) = with_["adapters"]
    assert entry["ref"] == adapter.ref and entry["path"] == str(adapter.path)
    assert (entry["scale"], entry["bytes"], entry["arch"]) == (
        0.5,
        adapter.facts.tensor_bytes,
        "gemma3",
    )


def test_cli_plan_json_and_refusal(tmp_path: Path) -> None:
    good = write_adapter(tmp_path / "good.gguf")
    bad = write_adapter(tmp_path / "bad.gguf", arch="qwen2")
    runner = CliRunner()
    res = runner.invoke(app, ["plan", BASE, "--profile", CPU, "--lora", f"{good}:0.75", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["adapters"][0]["scale"] == 0.75
    res = runner.invoke(app, ["plan", BASE, "--profile", CPU, "--lora", str(bad)])
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and "architecture is qwen2" in res.stderr


# --- render --------------------------------------------------------------------------------------


def _render(result: PlanResult, target: str, backend: str = "llamacpp") -> Any:
    return render_plan(
        result, backend=backend, target=target, model_path=Path("/srv/models/g.gguf"), name="g"
    )


def test_compose_mounts_the_adapter_read_only_and_scales_it(adapter: Adapter) -> None:
    b = _render(_plan(CPU, (adapter,)), "compose")
    i = b.command.index("--lora-scaled")
    assert b.command[i + 1] == "/adapters/lora-0.gguf:0.5"
    mount = next(m for m in b.mounts if m.target == "/adapters/lora-0.gguf")
    assert mount.source == str(adapter.path) and mount.read_only
    svc = yaml.safe_load(b.files["docker-compose.yml"])["services"]["llama-server"]
    assert {"type": "bind", "source": str(adapter.path), "target": "/adapters/lora-0.gguf",
            "read_only": True} in svc["volumes"]  # fmt: skip
    readme = b.files["README.md"]
    assert "/lora-adapters" in readme and '"lora": [{"id": 0, "scale": 0.5}]' in readme


def test_systemd_passes_the_host_path_and_reads_it_only(adapter: Adapter) -> None:
    b = _render(_plan(CPU, (adapter,)), "systemd")
    unit = b.files["deployer-g.service"]
    settings = {key: value for _, key, value in systemd_settings(unit)}
    argv = systemd_exec_argv(settings["ExecStart"])
    assert argv[argv.index("--lora-scaled") + 1] == f"{adapter.path}:0.5"
    assert str(adapter.path) in settings["ReadOnlyPaths"]


@pytest.mark.parametrize("bad", [",", ":", '"'])
def test_native_path_llama_server_cannot_split_is_refused(adapter: Adapter, bad: str) -> None:
    odd = replace(adapter, path=Path(f"/srv/a{bad}b.gguf"))
    with pytest.raises(DeployerError, match="--lora-scaled") as exc:
        _render(_plan(CPU, (odd,)), "systemd")
    assert "\n" not in exc.value.message()
    _render(_plan(CPU, (odd,)), "compose")  # in a container it is mounted under a plain name


def test_ollama_modelfile_gets_an_adapter_line(adapter: Adapter) -> None:
    full = replace(adapter, scale=1.0)
    b = _render(_plan(CPU, (full,), "ollama"), "compose", "ollama")
    cmds = modelfile_commands(b.files["Modelfile"])
    assert ("adapter", "/adapters/lora-0.gguf") in cmds
    native = _render(_plan(MAC, (full,), "ollama"), "launchd", "ollama")
    assert ("adapter", str(adapter.path)) in modelfile_commands(native.files["Modelfile"])


def test_ollama_scale_and_k8s_are_refused(adapter: Adapter) -> None:
    with pytest.raises(DeployerError, match="no scale"):
        _render(_plan(CPU, (adapter,), "ollama"), "compose", "ollama")
    with pytest.raises(DeployerError, match="k8s"):
        _render(_plan(CPU, (adapter,)), "k8s")


_names = st.lists(st.sampled_from(NASTY) | st.text(max_size=3), min_size=1, max_size=6).map("".join)


@cache
def _planned(profile: str, backend: str) -> PlanResult:
    return _plan(profile, (), backend)  # render reads the adapters from result.adapters


@given(name=_names)
def test_hostile_adapter_path_is_refused_or_lands_literally(adapter: Adapter, name: str) -> None:
    odd = replace(adapter, path=Path("/srv") / f"{name.replace('/', '_')}.gguf", scale=1.0)
    for backend, target in (("llamacpp", "compose"), ("ollama", "compose"), ("ollama", "launchd")):
        try:
            planned = _planned(MAC if target == "launchd" else CPU, backend)
            b = _render(replace(planned, adapters=[odd]), target, backend)
        except DeployerError as exc:
            assert "\n" not in exc.message()
            continue
        if target == "compose":
            svc = yaml.safe_load(b.files["docker-compose.yml"])["services"]
            vols = next(iter(s for k, s in svc.items() if k != "volume-init"))["volumes"]
            assert any(undollar(v.get("source")) == str(odd.path) for v in vols)  # '$$' is '$'

        if backend == "ollama":
            want = "/adapters/lora-0.gguf" if target == "compose" else str(odd.path)
            assert ("adapter", want) in modelfile_commands(b.files["Modelfile"])


# --- the record ----------------------------------------------------------------------------------

_RECORD = {
    "name": "g", "model": BASE, "quant": "Q4_K_M", "backend": "llamacpp",
    "runtime": "container", "endpoint": "http://127.0.0.1:8080", "port": 8080,
    "created_at": "2026-11-29T00:00:00+00:00",
}  # fmt: skip


def test_record_keeps_adapters() -> None:
    entry = {"ref": "a.gguf", "path": "/srv/a.gguf", "scale": 0.5}
    assert check_fields({**_RECORD, "adapters": [entry]}, expected_name="g")["adapters"] == [entry]


@pytest.mark.parametrize(
    "entry",
    [
        {"ref": "a", "path": "/a", "scale": float("nan")},
        {"ref": "a", "path": "/a", "scale": 1e9},
        {"ref": "a", "path": "/a", "scale": True},
        {"ref": "a", "path": "/a", "scale": 1, "x": 1},
        {"ref": "a\n", "path": "/a", "scale": 1},
        "a.gguf",
    ],
)
def test_hostile_record_adapter_is_refused(entry: Any) -> None:
    with pytest.raises(FieldInvalid):
        check_fields({**_RECORD, "adapters": [entry]}, expected_name="g")


def test_ps_shows_each_adapter_with_its_scale() -> None:
    from deployer.cli.deployments_view import with_adapters

    adapters = [{"ref": "hf://o/r", "path": "/c/x.gguf", "scale": 0.5},
                {"ref": "b.gguf", "path": "/d/b.gguf", "scale": 1.0}]  # fmt: skip
    assert with_adapters("demo", adapters) == "demo +x.gguf@0.5 +b.gguf@1"
    assert with_adapters("demo", []) == "demo"


# --- fleet inventories ---------------------------------------------------------------------------


def _inventory(hv: dict[str, Any]) -> dict[str, Any]:
    return {"_meta": {"hostvars": {"node1": {"deployer_model": "demo", **hv}}},
            "all": {"hosts": ["node1"]}}  # fmt: skip


def test_inventory_lora_list_is_kept() -> None:
    from deployer.core.fleet.inventory import hosts_from_inventory

    (h,) = hosts_from_inventory(_inventory({"deployer_lora": ["/a/s.gguf:0.5", "hf://o/r"]}))
    assert h.lora == ("/a/s.gguf:0.5", "hf://o/r")
    (h,) = hosts_from_inventory(_inventory({}))
    assert h.lora == ()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("/a/s.gguf", "is not a list"),
        ([1], "not text"),
        (["/a/s.gguf:huge"], "is not a number"),
        (["/a/s.txt"], "is not a .gguf file"),
        (["/a/{{ lookup('pipe', 'id') }}.gguf"], "template syntax"),
        (["/a/s.gguf\n"], "line break"),
        ([f"/a/{i}.gguf" for i in range(17)], "more than 16"),
        (["hf://o/r/../../x.gguf"], "deployer_lora"),
    ],
)
def test_hostile_inventory_lora_is_one_line_naming_the_host(value: Any, words: str) -> None:
    from deployer.core.fleet.inventory import hosts_from_inventory

    with pytest.raises(DeployerError) as exc:
        hosts_from_inventory(_inventory({"deployer_lora": value}))
    msg = exc.value.message()
    assert "\n" not in msg and "node1" in msg and words in msg


def test_fleet_host_ships_the_adapter_and_serves_it_from_the_host(adapter: Adapter) -> None:
    from deployer.adapters.clock import SystemClock
    from deployer.adapters.local_files import LocalDisk
    from deployer.core.fleet.inventory import FleetHost
    from deployer.core.fleet.run import FleetEdges, plan_one

    edges = FleetEdges(
        runner=None,  # type: ignore[arg-type]  # plan_one runs no playbook
        planner=wiring.plan_for, hub_store=wiring.hub_store, check_backend=wiring.check_backend,
        files=LocalDisk(), clock=SystemClock(), adapters=AdapterFiles(),
    )  # fmt: skip
    host = FleetHost("node1", CPU, "demo", lora=(f"{adapter.path}:0.5",))
    hp = plan_one(host, get_profile(CPU), "deployer/llama-server:test", edges)
    assert hp.ok, hp.reason
    shipped = hp.weights[-1]
    assert shipped.src == str(adapter.path) and shipped.dest == f"{hp.models_dir}/style.gguf"
    assert shipped.size == adapter.path.stat().st_size and shipped.sha256
    svc = yaml.safe_load(hp.files["docker-compose.yml"])["services"]["llama-server"]
    assert "/adapters/lora-0.gguf:0.5" in svc["command"]
    assert any(v["source"] == shipped.dest and v["read_only"] for v in svc["volumes"])
    assert hp.plan is not None and hp.plan["adapters"][0]["bytes"] == adapter.facts.tensor_bytes


# --- golden files --------------------------------------------------------------------------------

GOLDEN_LORA = Path(__file__).resolve().parents[1] / "golden" / "render-lora"
_FIXED_FACTS = AdapterFacts(
    architecture="gemma3", alpha=8.0, rank=8, tensor_bytes=1_474_560,
    layer_bytes=(81_920,) * 18, other_bytes=0, n_embd=640, n_layer=None, pairs=36,
)  # fmt: skip
# variant -> (profile, backend, target, adapters as (ref, path, scale))
LORA_VARIANTS: dict[str, tuple[str, str, str, list[tuple[str, str, float]]]] = {
    "llamacpp-compose-cpu-lora": (CPU, "llamacpp", "compose", [
        ("hf://acme/style-lora", "/srv/hf/style.gguf", 0.5),
        ("/srv/adapters/legal.gguf", "/srv/adapters/legal.gguf", 1.0)]),
    "llamacpp-systemd-nvidia-lora": (GPU, "llamacpp", "systemd", [
        ("/home/ops/legal.gguf", "/home/ops/legal.gguf", 0.8)]),
    "ollama-compose-cpu-lora": (CPU, "ollama", "compose", [
        ("/srv/adapters/legal.gguf", "/srv/adapters/legal.gguf", 1.0)]),
}  # fmt: skip


def _lora_variant(variant: str) -> dict[str, str]:
    profile, backend, target, given = LORA_VARIANTS[variant]
    adapters = [Adapter(ref, Path(path), scale, _FIXED_FACTS) for ref, path, scale in given]
    result = _plan(profile, tuple(adapters), backend)
    bundle = render_plan(
        result, backend=backend, target=target, model_path=Path("/srv/models/gemma.gguf")
    )
    return bundle.files


@pytest.mark.parametrize("variant", sorted(LORA_VARIANTS))
def test_lora_golden(variant: str, update_golden: bool) -> None:
    files = _lora_variant(variant)
    folder = GOLDEN_LORA / variant
    if update_golden:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for rel, text in files.items():
            (folder / rel).write_text(text, encoding="utf-8")
    assert sorted(files) == sorted(p.name for p in folder.iterdir()), "run --update-golden"
    for rel, text in files.items():
        assert text == (folder / rel).read_text(encoding="utf-8"), f"{variant}/{rel} changed"


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed; .ci/run must apt-get install docker-compose",
)
@pytest.mark.parametrize("variant", sorted(v for v in LORA_VARIANTS if "-compose-" in v))
def test_lora_compose_accepted_by_docker_compose(variant: str, tmp_path: Path) -> None:
    for rel, text in _lora_variant(variant).items():
        (tmp_path / rel).write_text(text, encoding="utf-8")
    proc = subprocess.run(
        ["docker-compose", "-f", str(tmp_path / "docker-compose.yml"), "config"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "/adapters/lora-0.gguf" in proc.stdout  # the adapter's mount survives its reading


_tensor_names = st.one_of(
    st.builds(lambda i, t, p: f"blk.{i}.{t}.weight.{p}", st.integers(0, 10**6),
              st.sampled_from(["attn_q", "attn_v", "ffn_down", "x"]),
              st.sampled_from(["lora_a", "lora_b", "lora_c"])),
    st.text(max_size=20),
)  # fmt: skip
_shapes = st.lists(st.integers(1, 4096), min_size=1, max_size=4).map(tuple)


@given(st.lists(st.tuples(_tensor_names, _shapes), max_size=8), st.sampled_from(["lora", "x"]))
def test_any_adapter_header_gives_facts_or_one_line(
    tensors: list[tuple[str, tuple[int, ...]]], kind: str
) -> None:
    from deployer.core.model.gguf_header import STRING, GGUFHeader, KeyValue, TensorEntry

    kv = {
        "general.type": KeyValue(STRING, "adapter", count=7),
        "adapter.type": KeyValue(STRING, kind, count=len(kind)),
        "general.architecture": KeyValue(STRING, "gemma3", count=6),
    }
    entries = [TensorEntry(n, "F32", s, 4 * int(np.prod(s)), 0) for n, s in tensors]
    header = GGUFHeader(3, 32, kv, entries, 0)
    try:
        facts = adapter_facts(header, "fuzz.gguf")
    except GGUFReadError as exc:
        assert "\n" not in exc.message()
        return
    assert kind == "lora" and facts.pairs >= 1 and len(facts.layer_bytes) <= 512
    assert facts.tensor_bytes >= sum(facts.layer_bytes) + facts.other_bytes


def test_ollama_deploy_with_an_adapter_is_refused_before_anything_runs(tmp_path: Path) -> None:
    path = write_adapter(tmp_path / "s.gguf")
    res = CliRunner().invoke(app, ["deploy", BASE, "--profile", CPU, "--backend", "ollama",
                                   "--lora", str(path), "--dry-run"])  # fmt: skip
    assert res.exit_code == 2 and res.stderr.count("\n") == 1  # a request it cannot do
    assert "does not load LoRA adapters yet" in res.stderr and "render" in res.stderr
