"""Golden files for every template x (nvidia, apple, cpu) profile class, one folder per variant."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.adapters.output_folder import write_files
from deployer.cli import wiring
from deployer.core.fit.plan import PlanRequest, PlanResult, make_plan
from deployer.core.hardware.profiles import get_profile
from deployer.core.model.catalog import get_quant
from deployer.core.serve.render import RenderedBundle, render_plan

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "render"
LOGS = Path("/Users/operator/Library/Logs/deployer")

# variant -> (model, profile, backend, target, extra render options); every branch of every
# template is taken by at least one variant. Test-only options: `model_root` (where the weights
# lie, default /srv/models) and `no_chat_template` (a GGUF without one: Ollama's TEMPLATE).
VARIANTS: dict[str, tuple[str, str, str, str, dict[str, Any]]] = {
    "llamacpp-compose-nvidia": (
        "llama-3.1-8b-instruct",
        "nvidia-a10g-24gb",
        "llamacpp",
        "compose",
        {},
    ),
    "llamacpp-compose-nvidia-expose": (
        "llama-3.1-8b-instruct",
        "nvidia-a10g-24gb",
        "llamacpp",
        "compose",
        {"expose": True},
    ),
    "llamacpp-compose-nvidia-2gpu": (
        "llama-3.1-70b-instruct",
        "nvidia-2x-a100-80gb",
        "llamacpp",
        "compose",
        {},
    ),
    "llamacpp-compose-cpu": ("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "llamacpp", "compose", {}),
    "llamacpp-compose-cpu-b4000": (
        "qwen2.5-7b-instruct",
        "cpu-x86-16c-64gb",
        "llamacpp",
        "compose",
        {"runtime_version": 4000, "load_mode": "mlock"},
    ),
    "llamacpp-systemd-nvidia-expose": (
        "llama-3.1-8b-instruct",
        "nvidia-a10g-24gb",
        "llamacpp",
        "systemd",
        {"expose": True, "api_key_file": Path("/etc/deployer/llama-3-1-8b-instruct/api_key")},
    ),
    "llamacpp-systemd-cpu": ("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "llamacpp", "systemd", {}),
    # Weights under a home folder (ProtectHome=read-only) and not downloaded yet (a pull line).
    "llamacpp-systemd-nvidia-home-pull": (
        "llama-3.1-8b-instruct",
        "nvidia-a10g-24gb",
        "llamacpp",
        "systemd",
        {
            "model_root": "/home/operator/models",
            "pull_command": "deployer pull llama-3.1-8b-instruct --quant Q6_K",
        },
    ),
    "llamacpp-k8s-nvidia-expose": (
        "llama-3.1-8b-instruct",
        "nvidia-a10g-24gb",
        "llamacpp",
        "k8s",
        {"expose": True},
    ),
    "llamacpp-k8s-cpu": ("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "llamacpp", "k8s", {}),
    "llamacpp-launchd-apple": (
        "llama-3.1-70b-instruct",
        "apple-m2-ultra-192gb",
        "llamacpp",
        "launchd",
        {"log_dir": LOGS},
    ),
    "llamacpp-launchd-apple-expose": (
        "llama-3.1-8b-instruct",
        "apple-m2-ultra-192gb",
        "llamacpp",
        "launchd",
        {
            "log_dir": LOGS,
            "expose": True,
            "api_key_file": Path("/Users/operator/.config/deployer/api_key"),
        },
    ),
    "ollama-compose-nvidia": ("llama-3.1-8b-instruct", "nvidia-a10g-24gb", "ollama", "compose", {}),
    "ollama-compose-cpu": ("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "ollama", "compose", {}),
    "ollama-compose-cpu-expose-insecure": (
        "qwen2.5-7b-instruct",
        "cpu-x86-16c-64gb",
        "ollama",
        "compose",
        {"expose": True, "insecure": True},
    ),
    "ollama-launchd-apple": (
        "llama-3.1-8b-instruct",
        "apple-m2-ultra-192gb",
        "ollama",
        "launchd",
        {"log_dir": LOGS},
    ),
}

# Golden files only: the Modelfile's TEMPLATE is Ollama's own Go template, `{{ }}` and all.
GOLDEN_ONLY: dict[str, tuple[str, str, str, str, dict[str, Any]]] = {
    "ollama-compose-nvidia-no-chat-template": (
        "llama-3.1-8b-instruct",
        "nvidia-a10g-24gb",
        "ollama",
        "compose",
        {"no_chat_template": True},
    ),
}
ALL_VARIANTS = VARIANTS | GOLDEN_ONLY


@cache
def plan_for(model: str, profile: str, backend: str) -> PlanResult:
    """A catalog plan (no download needed)."""
    name, candidates, lic = wiring.plan_candidates(model, None)
    return make_plan(
        name, candidates, get_profile(profile), PlanRequest(backend=backend), license=lic
    )


def render_variant(variant: str) -> RenderedBundle:
    """Render one golden variant with fixed paths, so the output is the same everywhere."""
    model, profile, backend, target, options = ALL_VARIANTS[variant]
    extra = dict(options)
    root = Path(extra.pop("model_root", "/srv/models"))
    result = plan_for(model, profile, backend)
    if extra.pop("no_chat_template", False):
        facts = result.chosen.facts.model_copy(update={"has_chat_template": False})
        result = replace(result, chosen=replace(result.chosen, facts=facts))
    entry = wiring.catalog_entry(model)
    assert entry is not None
    _, qf = get_quant(entry, result.chosen.facts.quant)
    return render_plan(
        result,
        backend=backend,
        target=target,
        model_path=root / qf.file,
        **extra,
    )


@pytest.mark.parametrize("variant", sorted(ALL_VARIANTS))
def test_golden(variant: str, update_golden: bool) -> None:
    bundle = render_variant(variant)
    folder = GOLDEN / variant
    if update_golden:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for rel, text in bundle.files.items():
            (folder / rel).write_text(text, encoding="utf-8")
    expected = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    assert sorted(bundle.files) == expected, "files differ: run pytest --update-golden"
    for rel, text in bundle.files.items():
        assert text == (folder / rel).read_text(encoding="utf-8"), f"{variant}/{rel} changed"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_render_is_deterministic_and_carries_health(variant: str) -> None:
    first, second = render_variant(variant), render_variant(variant)
    assert first.files == second.files
    text = "\n".join(first.files.values())
    assert "/tmp/pytest" not in text and "{{" not in text
    url = f"http://127.0.0.1:{first.host_port}" + (
        "/api/version" if first.backend == "ollama" else "/health"
    )
    files = first.files
    if first.target == "compose":
        assert yaml.safe_load(files["docker-compose.yml"])["services"]
        assert "healthcheck:" in files["docker-compose.yml"]
    elif first.target == "systemd":
        unit = f"deployer-{first.name}"
        assert url in files[f"{unit}.service"]  # ExecStartPost waits for it
        assert url in files[f"{unit}-health.service"]
        assert f"{unit}-health.timer" in files
    elif first.target == "launchd":
        assert url in files[f"io.deployer.{first.name}.health.plist"]
    else:
        deployment = yaml.safe_load(files["deployment.yaml"])
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/health"


COMPOSE_VARIANTS = sorted(v for v in ALL_VARIANTS if "-compose-" in v)


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed; .ci/run must apt-get install docker-compose",
)
@pytest.mark.parametrize("variant", COMPOSE_VARIANTS)
def test_compose_accepted_by_docker_compose(variant: str, tmp_path: Path) -> None:
    bundle = render_variant(variant)
    write_files(tmp_path, bundle.files)
    if bundle.files["docker-compose.yml"].count("api_key") > 0:
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets" / "api_key").write_text("test-key\n")
    proc = subprocess.run(
        ["docker-compose", "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    parsed = yaml.safe_load(bundle.files["docker-compose.yml"])
    assert parsed["services"]
