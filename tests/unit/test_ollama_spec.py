"""The Ollama container as deploy creates it: pure checks of the spec, no engine running."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployer.core.errors import InvalidRequest
from deployer.core.serve.render import (
    OLLAMA_VERSION,
    check_exposure,
    pinned_ollama_image,
    render_plan,
)
from deployer.core.serve.servers import ATTEMPT_LABEL, container_spec_for
from tests.unit.test_render_golden import plan_for, render_variant

MODEL = Path("/srv/models/Qwen2.5-7B-Instruct-Q6_K.gguf")


def test_ollama_spec_is_locked_down_and_local() -> None:
    bundle = render_variant("ollama-compose-cpu")
    spec = container_spec_for(bundle, None, attempt="a1")
    assert spec.image == f"docker.io/ollama/ollama:{OLLAMA_VERSION}"
    assert spec.command == ["serve"]
    assert spec.user == "65534:65534"
    assert spec.cap_drop == ["ALL"] and spec.security_opt == ["no-new-privileges"]
    assert spec.read_only_rootfs is True and spec.init is True
    assert spec.restart_policy == "unless-stopped"
    assert spec.tmpfs == {"/tmp": "rw,size=256m"}
    assert (spec.host_ip, spec.host_port, spec.container_port) == ("127.0.0.1", 11434, 11434)
    assert spec.health is not None and spec.health.test == ["CMD", "ollama", "list"]
    assert spec.labels["io.deployer.backend"] == "ollama"
    assert spec.labels["io.deployer.runtime-version"] == OLLAMA_VERSION
    assert spec.labels[ATTEMPT_LABEL] == "a1"
    assert spec.env["HOME"] == "/ollama" and spec.env["OLLAMA_MODELS"] == "/ollama/models"
    assert spec.env["OLLAMA_HOST"] == "0.0.0.0:11434"  # inside the container; published on lo
    weights, store = spec.mounts
    assert weights.source == str(MODEL) and weights.read_only is True
    assert weights.target == "/models/Qwen2.5-7B-Instruct-Q6_K.gguf"
    assert (store.source, store.target, store.read_only) == (
        "deployer-qwen2-5-7b-instruct-ollama",
        "/ollama",
        False,
    )


def test_ollama_store_volume_is_labelled_and_handed_to_the_server_user() -> None:
    bundle = render_variant("ollama-compose-nvidia")
    (vol,) = bundle.volume_specs()
    assert vol.name == "deployer-llama-3-1-8b-instruct-ollama" and vol.target == "/ollama"
    assert vol.labels["io.deployer.name"] == "llama-3-1-8b-instruct"
    assert vol.labels["io.deployer.backend"] == "ollama"
    assert vol.init_image == bundle.image
    assert vol.init_command == ["chown", "65534:65534", "/ollama"]
    assert render_variant("llamacpp-compose-cpu").volume_specs() == []


def test_ollama_spec_matches_the_rendered_compose_file() -> None:
    bundle = render_variant("ollama-compose-nvidia")
    spec = bundle.container_spec()
    doc = yaml.safe_load(bundle.files["docker-compose.yml"])
    svc, init = doc["services"]["ollama"], doc["services"]["volume-init"]
    assert svc["image"] == spec.image == init["image"]
    assert svc["user"] == spec.user and svc["environment"] == spec.env
    assert svc["ports"] == ["127.0.0.1:11434:11434"]
    assert init["cap_drop"] == ["ALL"] and init["cap_add"] == ["CHOWN"]
    assert (
        init["network_mode"] == "none"
        and init["entrypoint"] == bundle.volume_specs()[0].init_command
    )
    assert svc["depends_on"] == {"volume-init": {"condition": "service_completed_successfully"}}
    assert spec.gpus == ["0"]


def test_ollama_model_parameters_feed_modelfile_and_api_create() -> None:
    nvidia = render_variant("ollama-compose-nvidia")
    assert set(nvidia.model_parameters) == {"num_ctx", "num_gpu"}
    for key, value in nvidia.model_parameters.items():
        assert f"PARAMETER {key} {value}\n" in nvidia.files["Modelfile"]
    assert render_variant("ollama-compose-cpu").model_parameters == {"num_ctx": 8192}


@pytest.mark.parametrize(
    ("given", "pinned"),
    [
        ("docker.io/ollama/ollama", f"docker.io/ollama/ollama:{OLLAMA_VERSION}"),
        ("ollama/ollama:latest", f"ollama/ollama:{OLLAMA_VERSION}"),
        ("docker.io/ollama/ollama:rocm", f"docker.io/ollama/ollama:{OLLAMA_VERSION}-rocm"),
        ("docker.io/ollama/ollama:0.11.0", "docker.io/ollama/ollama:0.11.0"),
        ("registry.local:5000/ollama", "registry.local:5000/ollama"),
    ],
)
def test_ollama_image_is_pinned(given: str, pinned: str) -> None:
    assert pinned_ollama_image(given) == pinned


def test_ollama_expose_needs_insecure_and_says_why() -> None:
    with pytest.raises(InvalidRequest) as err:
        check_exposure("ollama", expose=True, insecure=False)
    assert err.value.exit_code == 2 and "no API key" in err.value.message()
    check_exposure("ollama", expose=True, insecure=True)
    check_exposure("llamacpp", expose=True, insecure=False)
    result = plan_for("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "ollama")
    bundle = render_plan(result, backend="ollama", target="compose", model_path=MODEL,
                         expose=True, insecure=True)  # fmt: skip
    assert bundle.container_spec().host_ip == "0.0.0.0"


def test_ollama_dry_run_prints_the_real_plan_files_and_spec() -> None:
    import json

    from typer.testing import CliRunner

    import deployer.cli.deploy  # noqa: F401  (registers `deploy`)
    from deployer.cli.app import app

    args = ["deploy", "demo", "--profile", "cpu-x86-16c-64gb", "--backend", "ollama"]
    res = CliRunner().invoke(app, [*args, "--port", "18111", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["plan"]["backend"] == "ollama"
    assert {"Modelfile", "create.sh", "docker-compose.yml"} <= set(out["files"])
    c = out["container"]
    assert c["image"] == f"docker.io/ollama/ollama:{OLLAMA_VERSION}" and c["user"] == "65534:65534"
    assert c["ports"] == "127.0.0.1:18111->11434" and c["api_key_file"] is None
    assert c["env"]["OLLAMA_MODELS"] == "/ollama/models"
    assert [v["name"] for v in c["volumes"]] == ["deployer-demo-ollama"]
    assert out["ollama_create"]["model"] == "demo"
    # The demo GGUF has no chat template: Gemma's turn format and its stop token are given.
    assert out["ollama_create"]["parameters"] == {
        "num_ctx": out["plan"]["ctx"],
        "stop": ["<end_of_turn>"],
    }
    assert out["ollama_create"]["template"].startswith("<start_of_turn>user\n")
    modelfile = out["files"]["Modelfile"]
    assert (
        'PARAMETER stop "<end_of_turn>"' in modelfile and 'TEMPLATE """<start_of_turn>' in modelfile
    )
    text = CliRunner().invoke(app, [*args, "--dry-run"])
    assert text.exit_code == 0 and "--- Modelfile" in text.stdout


def test_ollama_image_missing_says_how_to_load_it() -> None:
    from deployer.cli.wiring import choose_image
    from deployer.core.errors import ImageMissing

    class NoImages:
        def image_info(self, *, tag: str) -> None:
            return None

        def try_pull(self, *, tag: str) -> bool:
            return False

    with pytest.raises(ImageMissing) as err:
        choose_image(NoImages(), "docker.io/ollama/ollama:0.12.6", "cpu", None, "ollama")
    assert "docker save | docker load" in err.value.message()
    assert choose_image(NoImages(), "x", "cpu", "mine:1", "ollama") == (
        "mine:1",
        "mine:1 (--image)",
    )
