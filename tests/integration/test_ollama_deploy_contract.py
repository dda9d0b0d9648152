"""`deployer deploy --backend ollama` end to end, Ollama played by its API contract server.

The official Ollama image cannot run here (no registry, no binary): the engine stand-in
`ContractEngine` starts the contract server where the container would publish its port, and
the real core flow, OllamaClient and smoke test talk HTTP to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import deployer.cli.deploy  # registers `deploy`
import deployer.cli.deployments  # registers `ps`, `down`
import deployer.cli.wiring  # patched below
from deployer.adapters.host import LocalHost
from deployer.adapters.ollama import OllamaError, create_in_server, sha256_digest
from deployer.adapters.smoke import ollama_smoke
from deployer.adapters.state_store import load_record, load_records
from deployer.cli import wiring
from deployer.cli.app import app
from deployer.core.errors import NameInUse, SmokeTestFailed
from deployer.core.serve.deploy import check_name_free, serve_and_prove, with_limits
from deployer.core.serve.render import RenderedBundle, render_plan
from deployer.core.serve.servers import OllamaContainer, container_spec_for
from tests.integration.loopback import free_port
from tests.integration.ollama_contract import ContractEngine, OllamaContract
from tests.unit.test_render_golden import plan_for

PROFILE = "cpu-x86-16c-64gb"


@pytest.fixture
def contract() -> OllamaContract:
    return OllamaContract()


@pytest.fixture
def engine(contract: OllamaContract) -> Iterator[ContractEngine]:
    eng = ContractEngine(contract, image="docker.io/ollama/ollama:0.12.6")
    yield eng
    for cid in list(eng.running):
        eng.stop_and_remove(name_or_id=cid)


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "Qwen2.5-7B-Instruct-Q6_K.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 256)
    return path


def _bundle(gguf: Path, name: str = "qwen") -> tuple[object, RenderedBundle]:
    result = plan_for("qwen2.5-7b-instruct", PROFILE, "ollama")
    bundle = render_plan(result, backend="ollama", target="compose", model_path=gguf,
                         port=free_port(), name=name)  # fmt: skip
    return result, bundle


def _deploy(engine: ContractEngine, gguf: Path, name: str = "qwen") -> object:
    """The Ollama server of deploy_model, served and proven as it serves it."""
    result, bundle = _bundle(gguf, name)
    records = wiring.record_store()
    check_name_free(bundle.name, engine, records=records)
    host = LocalHost()
    spec = container_spec_for(bundle, None, attempt=host.attempt_id())
    spec = with_limits(spec, result, host_cpus=host.cpu_count())  # type: ignore[arg-type]
    server = OllamaContainer(engine, bundle, spec, "test", create=create_in_server, model_path=gguf)
    return serve_and_prove(
        result=result,  # type: ignore[arg-type]
        bundle=bundle,
        server=server,
        smoke=ollama_smoke,
        model_files=[str(gguf)],
        api_key_file=None,
        records=records,
        keys=None,
        clock=wiring.clock(),
        timeout_s=10,
    )


def test_contract_deploy_creates_model_proves_it_and_records(
    engine: ContractEngine, contract: OllamaContract, gguf: Path
) -> None:
    done = _deploy(engine, gguf)
    (spec,) = engine.specs
    (vol,) = engine.volumes.values()
    assert vol.name == "deployer-qwen-ollama" and vol.labels["io.deployer.name"] == "qwen"
    assert vol.init_command == ["chown", "65534:65534", "/ollama"]
    assert spec.user == "65534:65534" and spec.host_ip == "127.0.0.1"
    # health first, then one upload of the GGUF, the create with the rendered parameters, a chat
    paths = [p for _, p in contract.requests]
    assert paths.index("/api/version") < paths.index("/api/create")
    assert contract.blobs == {sha256_digest(gguf): gguf.stat().st_size}
    created = contract.models["qwen:latest"]
    assert created["files"] == {gguf.name: sha256_digest(gguf)}
    assert created["parameters"] == {"num_ctx": 8192}
    (chat,) = contract.chats
    assert chat["model"] == "qwen" and chat["max_tokens"] == 8
    assert paths[-1] == "/v1/chat/completions"
    record = load_record("qwen")
    assert record is not None and record.backend == "ollama" and record.runtime == "container"
    assert record.volumes == ["deployer-qwen-ollama"] and record.api_key_path is None
    assert record.image == "docker.io/ollama/ollama:0.12.6"
    out = done.as_dict()  # type: ignore[attr-defined]
    assert out["served_model"] == "qwen" and out["smoke"]["completion_tokens"] == 8
    # qwen2.5-7b-instruct carries a chat template: the chat proof, nothing to match.
    assert out["smoke"]["kind"] == "chat" and out["smoke"]["matched"] is None
    assert contract.generates == []
    assert out["endpoint"] == f"http://127.0.0.1:{spec.host_port}"


@pytest.mark.parametrize(
    ("path", "error"),
    [("/api/create", OllamaError), ("/api/blobs/", OllamaError),
     ("/v1/chat/completions", SmokeTestFailed)],
)  # fmt: skip
def test_contract_failure_removes_container_and_volume_and_writes_no_record(
    engine: ContractEngine, contract: OllamaContract, gguf: Path, path: str, error: type
) -> None:
    if path == "/api/blobs/":
        path = f"/api/blobs/{sha256_digest(gguf)}"
    contract.fail[path] = (500, "injected failure")
    with pytest.raises(error):
        _deploy(engine, gguf)
    assert engine.running == {} and len(engine.removed) == 1
    assert engine.volumes == {} and engine.removed_volumes == ["deployer-qwen-ollama"]
    assert load_record("qwen") is None and load_records() == []


def test_contract_failure_keeps_a_volume_it_did_not_create(
    engine: ContractEngine, contract: OllamaContract, gguf: Path
) -> None:
    _, bundle = _bundle(gguf)
    (vol,) = bundle.volume_specs()
    engine.create_volume(spec=vol)  # a store left by an earlier deployment of this name
    contract.fail["/api/create"] = (500, "injected failure")
    with pytest.raises(OllamaError):
        _deploy(engine, gguf)
    assert engine.running == {} and list(engine.volumes) == ["deployer-qwen-ollama"]


def test_contract_name_in_use_creates_nothing(engine: ContractEngine, gguf: Path) -> None:
    _deploy(engine, gguf)
    with pytest.raises(NameInUse):
        _deploy(engine, gguf)
    assert len(engine.specs) == 1 and len(engine.running) == 1


def test_contract_cli_deploy_ps_down(
    engine: ContractEngine, contract: OllamaContract, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deployer.cli.wiring, "docker_engine", lambda: engine)
    port = free_port()
    args = ["deploy", "demo", "--profile", PROFILE, "--backend", "ollama", "--port", str(port)]
    res = CliRunner().invoke(app, [*args, "--name", "demo-ollama", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["backend"] == "ollama" and out["served_model"] == "demo-ollama"
    assert out["endpoint"] == f"http://127.0.0.1:{port}" and out["api_key_path"] is None
    assert out["volumes"] == ["deployer-demo-ollama-ollama"]
    created = contract.models["demo-ollama:latest"]
    # The demo GGUF has no chat template: the create step sends Gemma's format and stop token.
    assert created["template"].startswith("<start_of_turn>user")
    assert created["parameters"]["stop"] == ["<end_of_turn>"]
    # ...and no chat proof: a raw generate (the TEMPLATE bypassed) of a count, checked.
    (gen,) = contract.generates
    assert gen["raw"] is True and gen["model"] == "demo-ollama" and gen["stream"] is False
    assert gen["options"] == {"temperature": 0, "num_predict": 8}
    assert contract.chats == []
    smoke = out["smoke"]
    assert (smoke["kind"], smoke["prompt"], smoke["matched"]) == ("completion", gen["prompt"], True)
    assert smoke["text"] == " 8, 9, 10, 1" and smoke["completion_tokens"] == 8
    assert smoke["time_to_first_token_ms"] == 40.0 and smoke["tokens_per_s"] == 40.0
    ps = CliRunner().invoke(app, ["ps", "--json"])
    assert ps.exit_code == 0, ps.output
    assert [d["name"] for d in json.loads(ps.stdout)] == ["demo-ollama"]
    text = CliRunner().invoke(app, [*args[:-1], str(free_port()), "--name", "demo-text"])
    assert text.exit_code == 0, text.output
    assert '"model": "demo-text"' in text.stdout and "tear down" in text.stdout
    down = CliRunner().invoke(app, ["down", "--all"])
    assert down.exit_code == 0, down.output
    assert "removed volume deployer-demo-ollama-ollama" in down.output
    assert engine.running == {} and engine.volumes == {} and load_records() == []


def test_contract_cli_expose_without_insecure_is_refused_before_anything(
    engine: ContractEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deployer.cli.wiring, "docker_engine", lambda: engine)
    args = ["deploy", "demo", "--profile", PROFILE, "--backend", "ollama", "--expose"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "Ollama has no API key" in res.output and "--insecure" in res.output
    assert engine.specs == [] and engine.volumes == {}
    ok = CliRunner().invoke(app, [*args, "--insecure", "--port", str(free_port()), "--json"])
    assert ok.exit_code == 0, ok.output
    assert engine.specs[-1].host_ip == "0.0.0.0"
    assert "warning" in ok.stderr and "no API key" in ok.stderr


def test_contract_cli_unexpected_continuation_is_reported_not_fatal(
    engine: ContractEngine, contract: OllamaContract, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deployer.cli.wiring, "docker_engine", lambda: engine)
    contract.continuation = [".", "\n\n", "<h2>", "<strong>"]  # a model that answers noise
    args = ["deploy", "demo", "--profile", PROFILE, "--backend", "ollama", "--name", "weak"]
    res = CliRunner().invoke(app, [*args, "--port", str(free_port())])
    assert res.exit_code == 0, res.output
    assert "smoke test (completion)" in res.stdout
    assert "did not continue as expected (wanted '8' next)" in res.stdout
    rec = load_record("weak")
    assert rec is not None  # the server works: the deployment stays, and says so
    assert CliRunner().invoke(app, ["down", "weak"]).exit_code == 0
