"""LoRA adapters on the real llama-server: an adapter GGUF written by the `gguf` writer for the
demo's architecture is loaded, listed by GET /lora-adapters, counted as llama.cpp allocates it,
and changes a temperature-0 completion between scale 0 and 1 (native binary, then a deploy
through the real Docker engine and image)."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deployer.adapters.state_store import load_record
from deployer.cli.app import app
from tests.integration.loopback import free_port, wait_http_200
from tests.integration.test_native import _llama_server
from tests.unit.lora_gguf import write_adapter

PROFILE = ["--profile", "cpu-x86-2c-8gb"]
PROMPT = "The capital of France is"
needs_llama = pytest.mark.skipif(
    _llama_server() is None,
    reason="no llama-server build: run 'bash scripts/build-llama.sh' or set DEPLOYER_LLAMA_PREFIX",
)


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def _http(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _complete(base: str, lora: list[dict[str, float]] | None) -> str:
    # cache_prompt off: a prompt cached under other scales would be reused as is
    body: dict[str, Any] = {"prompt": PROMPT, "n_predict": 8, "temperature": 0, "seed": 0,
                            "cache_prompt": False}  # fmt: skip
    if lora is not None:
        body["lora"] = lora
    return str(_http(f"{base}/completion", body)["content"])


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Rank 4 on every block's attn_q and attn_v, entries ~N(0, 0.5): B·A adds ~N(0, 1) to each
    # weight of those matrices (alpha = rank, scale 1), far above their own magnitude, so the
    # output must change.
    path = tmp_path_factory.mktemp("lora") / "style.gguf"
    write_adapter(path)
    path.chmod(0o644)  # the container runs as nobody
    return path


def _check_scales_change_output(base: str, served_path: str, start_scale: float) -> None:
    (listed,) = _http(f"{base}/lora-adapters")
    assert listed["id"] == 0 and listed["path"] == served_path
    assert listed["scale"] == pytest.approx(start_scale)
    off = _complete(base, [{"id": 0, "scale": 0.0}])
    on = _complete(base, [{"id": 0, "scale": 1.0}])
    assert off and on and off != on, (off, on)
    assert _complete(base, [{"id": 0, "scale": 0.0}]) == off  # temperature 0: repeatable
    # The server-wide scale (POST /lora-adapters) applies to requests without a `lora` list.
    _http(f"{base}/lora-adapters", [{"id": 0, "scale": 0.0}])
    assert _complete(base, None) == off
    _http(f"{base}/lora-adapters", [{"id": 0, "scale": 1.0}])
    assert _complete(base, None) == on


@pytest.mark.llama_server
@needs_llama
def test_llama_server_allocates_what_the_plan_counts(adapter: Path, demo_model: Path) -> None:
    code, out, err = _run("plan", "demo", *PROFILE, "--lora", f"{adapter}:0.5", "--json")
    assert code == 0, err
    (planned,) = json.loads(out)["adapters"]
    port = free_port()
    binary = str(_llama_server())
    argv = [binary, "-v", "-m", str(demo_model), "--port", str(port), "-c", "2048", "-np", "1",
            "--no-webui", "--lora-scaled", f"{adapter}:0.5"]  # fmt: skip
    log_path = adapter.with_name("server.log")  # a file: -v fills a pipe and blocks the server
    with (
        log_path.open("w") as log_file,
        subprocess.Popen(argv, stdout=log_file, stderr=log_file) as p,
    ):
        try:
            assert wait_http_200(f"http://127.0.0.1:{port}/health", timeout_s=120)
            _check_scales_change_output(f"http://127.0.0.1:{port}", str(adapter), 0.5)
        finally:
            p.terminate()
            p.wait(timeout=30)
    log = log_path.read_text(errors="replace")
    sizes = re.findall(r"LoRA buffer size =\s+([0-9.]+) MiB", log)
    assert len(sizes) == 1, log[-2000:]
    # llama.cpp logs MiB with two decimals: the plan's bytes agree to that precision.
    assert abs(float(sizes[0]) - planned["bytes"] / 2**20) <= 0.005 + 1e-9
    assert f"loaded {2 * 36} tensors from lora file" in log


@pytest.mark.llama_server
@needs_llama
def test_native_deploy_with_lora(adapter: Path) -> None:
    port = free_port()
    code, out, err = _run("deploy", "demo", *PROFILE, "--runtime", "native", "--name", "lora-n",
                          "--port", str(port), "--lora", f"{adapter}:0.5", "--json")  # fmt: skip
    assert code == 0, err
    try:
        got = json.loads(out)
        assert got["adapters"] == [{"ref": str(adapter), "path": str(adapter), "scale": 0.5}]
        _check_scales_change_output(f"http://127.0.0.1:{port}", str(adapter), 0.5)
    finally:
        assert _run("down", "lora-n")[0] == 0


@pytest.mark.docker
def test_docker_deploy_with_lora_lists_and_applies_it(adapter: Path) -> None:
    port = free_port()
    code, out, err = _run("deploy", "demo", *PROFILE, "--name", "lora-d", "--port", str(port),
                          "--lora", f"{adapter}:0.5")  # fmt: skip
    assert code == 0, err
    try:
        assert f"LoRA adapters: id 0 {adapter} at scale 0.5" in out
        assert "/lora-adapters" in out and '"lora": [{"id": 0, "scale": 0.5}]' in out
        rec = load_record("lora-d")
        assert rec is not None
        assert rec.adapters == [{"ref": str(adapter), "path": str(adapter), "scale": 0.5}]
        code, ps_out, _ = _run("ps", "--json")
        (row,) = [r for r in json.loads(ps_out) if r["name"] == "lora-d"]
        assert row["adapters"] == rec.adapters
        _check_scales_change_output(f"http://127.0.0.1:{port}", "/adapters/lora-0.gguf", 0.5)
    finally:
        assert _run("down", "lora-d")[0] == 0


def test_hub_adapter_is_pulled_verified_and_planned(hub: Any, tmp_path: Path) -> None:
    style = write_adapter(tmp_path / "style.gguf")
    other = write_adapter(tmp_path / "other.gguf", layers=[0], seed=1)
    hub.add_repo("org/two-loras", {"style.gguf": style, "other.gguf": other})
    hub.add_repo("org/one-lora", {"adapter.gguf": other})
    code, out, err = _run("plan", "demo", *PROFILE, "--json",
                          "--lora", "hf://org/two-loras/style.gguf:0.5",
                          "--lora", "hf://org/one-lora")  # fmt: skip
    assert code == 0, err
    first, second = json.loads(out)["adapters"]
    assert first["ref"] == "hf://org/two-loras/style.gguf" and first["scale"] == 0.5
    assert Path(first["path"]).read_bytes() == style.read_bytes()  # in the Hub cache, verified
    assert second["ref"] == "hf://org/one-lora" and second["scale"] == 1.0
    assert Path(second["path"]).read_bytes() == other.read_bytes()
    served = hub.served("org/two-loras", "style.gguf")
    assert _run("plan", "demo", *PROFILE, "--lora", "hf://org/two-loras/style.gguf")[0] == 0
    assert hub.served("org/two-loras", "style.gguf") == served  # cached: not fetched again
    code, _, err = _run("plan", "demo", *PROFILE, "--lora", "hf://org/two-loras")
    assert code != 0 and err.count("\n") == 1  # two .gguf files and none named
    assert "holds 2 .gguf adapter files" in err and "hf://org/two-loras/FILE.gguf" in err


@pytest.mark.docker
def test_fleet_host_with_deployer_lora_serves_the_adapter(
    engine: Any, runtime_image: str, host_root: Path, adapter: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ansible_runner", reason="ansible-runner is not installed ('.[fleet]')")
    from tests.integration.test_fleet import _by_host, _fleet, _inventory

    port = free_port()
    inv = _inventory(tmp_path / "fleet.yml", runtime_image, {"node-l": {
        "deployer_port": port, "deployer_root": f"{host_root}/l",
        "deployer_lora": [f"{adapter}:0.5"],
    }})  # fmt: skip
    try:
        code, out, err = _fleet("deploy", "-i", str(inv))
        host = _by_host(out)["node-l"]
        assert code == 0 and host["result"] == "deployed", (host, err)
        shipped = f"{host_root}/l/models/{adapter.name}"
        assert Path(shipped).read_bytes() == adapter.read_bytes()  # copied, sha256 checked
        _check_scales_change_output(f"http://127.0.0.1:{port}", "/adapters/lora-0.gguf", 0.5)
    finally:
        code, _, err = _fleet("down", "-i", str(inv), "--purge")
        assert code == 0, err
    assert not Path(f"{host_root}/l/models/{adapter.name}").exists()
