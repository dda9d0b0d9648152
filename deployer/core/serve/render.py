"""Render a plan into files a careful operator would write by hand, and the container spec.

Every decision (argument list, paths, ports, GPUs, timeouts) is made here in Python; the
Jinja2 templates in templates/ only loop and branch over the context built here. Rendered
YAML and plists are parsed back before they are handed out.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from xml.sax.saxutils import escape as xml_escape

import jinja2

from deployer import __version__
from deployer.core.data_source import data_source
from deployer.core.errors import InvalidRequest
from deployer.core.fit.memory import CTX_CHECKPOINTS
from deployer.core.fit.plan import PlanResult
from deployer.core.model.chat_templates import OllamaFormat, builtin_template, ollama_format
from deployer.core.model.ref import model_alias as alias_of
from deployer.core.model.ref import split_parts
from deployer.core.serve import conventions as cv
from deployer.core.serve.conventions import API_KEY_IN_CONTAINER as API_KEY_IN_CONTAINER
from deployer.core.serve.conventions import CONTAINER_PORT as CONTAINER_PORT
from deployer.core.serve.conventions import HEALTH_PATH as HEALTH_PATH
from deployer.core.serve.conventions import (
    MODEL_DIR,
    MODELFILE,
    MODELFILE_IN_CONTAINER,
    OLLAMA_TMP_SIZE_MIB,
    ROOT_USER,
    TMP_DIR,
    TMP_SIZE_MIB,
    tmpfs_options,
)
from deployer.core.serve.conventions import NOBODY as NOBODY
from deployer.core.serve.limits import resource_limits
from deployer.core.serve.llama_flags import (
    PINNED_BUILD,
    flash_attn_args,
    get_version,
    load_mode_args,
)
from deployer.core.serve.monitoring import (
    DASHBOARD_FILE,
    PROMETHEUS_FILE,
    ScrapeTarget,
    dashboard,
    k8s_annotations,
    scrape_config,
)
from deployer.core.serve.quoting import (
    Quoted,
    comment,
    md,
    md_code,
    mf_block,
    mf_value,
    sd_line,
    sd_path,
    sd_text,
    sd_word,
    sh,
    sh_line,
    xml_text,
    yaml_dollar,
    yaml_str,
    yaml_word,
)
from deployer.core.serve.rendered import check_rendered
from deployer.core.serve.router import (
    PRESET_FILE,
    RouterSetup,
    router_args,
    router_labels,
    router_limits,
    router_mounts,
)
from deployer.core.serve.specs import ContainerSpec, HealthCheck, Mount, VolumeSpec
from deployer.core.units import GIB
from deployer.core.untrusted import (
    DEPLOYMENT_NAME_HINT,
    DEPLOYMENT_NAME_RE,
    UntrustedValue,
    check_line,
    shown,
)

Backend = Literal["llamacpp", "ollama"]
Target = Literal["compose", "systemd", "launchd", "k8s"]

TARGETS: dict[str, tuple[str, ...]] = {
    "llamacpp": ("compose", "systemd", "launchd", "k8s"),
    "ollama": ("compose", "launchd"),
}
# The Ollama release the create step and the container settings are written for; its tags
# (`latest`, `rocm`) move, so render pins them like llama.cpp's.
OLLAMA_VERSION = "0.12.6"
# Ollama keeps its key pair under $HOME/.ollama and its models under OLLAMA_MODELS: both live
# in one named volume, the only writable place besides /tmp, so it can run as user 65534.
OLLAMA_HOME = "/ollama"
OLLAMA_MODELS_DIR = f"{OLLAMA_HOME}/models"
OLLAMA_TMPFS = {TMP_DIR: tmpfs_options(OLLAMA_TMP_SIZE_MIB)}
DEFAULT_BINARY = {
    ("llamacpp", "systemd"): "/usr/local/bin/llama-server",
    ("llamacpp", "launchd"): "/opt/homebrew/bin/llama-server",
    ("ollama", "launchd"): "/opt/homebrew/bin/ollama",
}
# Seconds to wait for a model to load: a fixed start plus the file read at a slow disk's pace.
STARTUP_BASE_S = 60
LOAD_BYTES_PER_S = 200_000_000


@dataclass
class RenderedBundle:
    """The rendered files plus what the Docker adapter and the native supervisor need."""

    name: str
    backend: str
    target: str
    files: dict[str, str]
    image: str | None
    command: list[str]
    native: list[str]
    labels: dict[str, str]
    env: dict[str, str]
    mounts: list[Mount]
    health: HealthCheck
    host_ip: str
    host_port: int
    container_port: int
    user: str
    gpus: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Ollama: the model's PARAMETERs (Modelfile and API create alike): ints, and `stop` (a
    # list) with `model_template` when the GGUF has no chat template of its own.
    model_parameters: dict[str, Any] = field(default_factory=dict)
    model_template: str | None = None
    tmpfs: dict[str, str] = field(default_factory=dict)  # empty: the spec's default
    # Every target's cgroup limits (see resource_limits); launchd has no cgroups.
    memory_limit_bytes: int | None = None
    pids_limit: int | None = None

    def container_spec(self) -> ContainerSpec:
        """What the Docker adapter creates: same args, mounts and health check as the files."""
        if self.image is None:
            raise InvalidRequest(f"target '{self.target}' runs natively, not in a container")
        spec = ContainerSpec(
            name=self.name,
            image=self.image,
            command=list(self.command),
            labels=dict(self.labels),
            env=dict(self.env),
            mounts=list(self.mounts),
            host_ip=self.host_ip,
            host_port=self.host_port,
            container_port=self.container_port,
            user=self.user,
            gpus=list(self.gpus),
            health=self.health,
            memory_limit_bytes=self.memory_limit_bytes,
            pids_limit=self.pids_limit,
        )
        return replace(spec, tmpfs=dict(self.tmpfs)) if self.tmpfs else spec

    def volume_specs(self) -> list[VolumeSpec]:
        """The named volumes the container writes to, each prepared for the container user."""
        if self.image is None:
            return []
        return [
            VolumeSpec(
                name=m.source,
                labels=dict(self.labels),
                target=m.target,
                init_image=self.image,
                init_command=volume_init_command(self.user, m.target),
            )
            for m in self.mounts
            if not m.read_only and not m.source.startswith("/")
        ]

    def native_argv(self) -> list[str]:
        """The argument list of a supervised local process (binary first)."""
        return list(self.native)


def _q(value: object) -> str:
    """A scalar as a double-quoted YAML/JSON string (never HTML-escaped); the image template's."""
    return json.dumps(str(value) if not isinstance(value, int | float) else value)


# What each strict template may print: only values quoted for its own syntax (or ints). A
# template not listed here (the image Dockerfile) is not strict.
STRICT_TEMPLATES: dict[str, frozenset[str]] = {
    "llamacpp/docker-compose.yml.j2": frozenset({"yaml-dollar", "comment"}),
    "ollama/docker-compose.yml.j2": frozenset({"yaml-dollar", "comment"}),
    "ollama/Modelfile.j2": frozenset({"modelfile", "comment"}),
    "ollama/create.sh.j2": frozenset({"sh", "comment"}),
    "k8s/": frozenset({"yaml", "yaml-dollar", "comment"}),
    "systemd/": frozenset({"systemd", "comment"}),
    "launchd/": frozenset({"xml", "comment"}),
    "readme/": frozenset({"sh", "md"}),
}


class UnquotedValue(Exception):
    """A strict template printed a value without the filter for its syntax (a template bug)."""


def _strict_syntaxes(template: str | None) -> frozenset[str] | None:
    for prefix, syntaxes in STRICT_TEMPLATES.items():
        if (template or "").startswith(prefix):
            return syntaxes
    return None


@jinja2.pass_context
def _finalize(context: jinja2.runtime.Context, value: object) -> object:
    """Refuse, in a strict template, any printed value that its syntax's filter did not make."""
    allowed = _strict_syntaxes(context.name)
    if allowed is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, Quoted) and value.syntax in allowed:
        return value
    raise UnquotedValue(f"{context.name} prints {value!r} without a filter for its syntax")


_ENV: jinja2.Environment | None = None


def template_env() -> jinja2.Environment:
    """The one Jinja2 environment: shipped templates, StrictUndefined, a quoting filter per
    syntax, and strict templates that print nothing else."""
    global _ENV
    if _ENV is None:
        _ENV = jinja2.Environment(
            # The installed DataSource, asked when a template is first needed.
            loader=jinja2.FunctionLoader(lambda name: data_source().template_text(name)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=_finalize,
        )
        _ENV.filters.update(
            q=_q,
            x=lambda v: xml_escape(str(v)),
            yaml=yaml_str,
            yaml_dollar=yaml_dollar,
            yaml_word=yaml_word,
            sd_word=sd_word,
            sd_path=sd_path,
            sd_text=sd_text,
            xml=xml_text,
            comment=comment,
            sh=sh,
            md=md,
            code=md_code,
            mf=mf_value,
            mf_block=mf_block,
        )
    return _ENV


def default_name(model: str) -> str:
    """A deployment name from a model reference (DNS-safe, as k8s and Docker need)."""
    base = model.removeprefix("hf://").rsplit("/", 1)[-1]
    base = re.sub(r"\.gguf$", "", base, flags=re.IGNORECASE).lower()
    return re.sub(r"[^a-z0-9]+", "-", base).strip("-")[:52].strip("-") or "model"


def startup_timeout_s(file_bytes: int) -> int:
    """How long a load may take before it counts as failed; grows with the file."""
    return STARTUP_BASE_S + math.ceil(file_bytes / LOAD_BYTES_PER_S)


def _model_parts(model_path: Path) -> list[Path]:
    """The file, or every part of a split set (named from the first part)."""
    return split_parts(model_path)


def running_image(bundle: RenderedBundle, image: str) -> RenderedBundle:
    """`bundle` run on `image` (the one deploy chose: a local build when no registry answers),
    its health probe one that image can run (curl is in the official images, not in ours)."""
    health = replace(bundle.health, test=_health_test(bundle.backend, image))
    return replace(bundle, image=image, health=health)


def _health_test(backend: str, image: str) -> list[str]:
    """A probe the image can run: the official llama.cpp images carry curl, ours busybox wget."""
    if backend == "ollama":
        return ["CMD", "ollama", "list"]
    url = f"http://127.0.0.1:{CONTAINER_PORT['llamacpp']}{HEALTH_PATH['llamacpp']}"
    if image.startswith("ghcr.io/ggml-org/llama.cpp"):
        return ["CMD", "curl", "-fsS", "-o", "/dev/null", url]
    return ["CMD", "wget", "-q", "-O", "/dev/null", url]


def _pinned_image(image: str, build: int) -> str:
    """The official llama.cpp tags move; pin them to the build the flags are rendered for."""
    repo, _, tag = image.rpartition(":")
    if repo == "ghcr.io/ggml-org/llama.cpp" and not re.search(r"-b\d+$", tag):
        return f"{repo}:{tag}-b{build}"
    return image


def pinned_ollama_image(image: str, version: str = OLLAMA_VERSION) -> str:
    """`ollama/ollama[:latest|:rocm]` pinned to `version` (`0.12.6`, `0.12.6-rocm`)."""
    repo, colon, tag = image.rpartition(":")
    if not colon or "/" in tag:
        repo, tag = image, ""
    if repo.removeprefix("docker.io/") != "ollama/ollama" or re.match(r"\d+\.\d+", tag):
        return image
    return f"{repo}:{version}" if tag in ("", "latest") else f"{repo}:{version}-{tag}"


def check_exposure(backend: str, *, expose: bool, insecure: bool) -> None:
    """Refuse to publish an Ollama server (it has no API key) unless --insecure says so."""
    if expose and backend == "ollama" and not insecure:
        raise InvalidRequest(
            "Ollama has no API key: exposing it lets anyone on the network use (and pull into) "
            "the server",
            "Keep it on 127.0.0.1 behind an authenticating proxy, use --backend llamacpp "
            "(which gets an API key), or add --insecure if you accept that.",
        )


def _check_request(
    result: PlanResult, backend: str, target: str, expose: bool, insecure: bool, name: str
) -> None:
    if backend not in TARGETS:
        raise InvalidRequest(f"unknown backend '{backend}'", "Use llamacpp or ollama.")
    if target not in TARGETS[backend]:
        raise InvalidRequest(
            f"backend {backend} has no '{target}' target",
            f"Use --target {' or '.join(TARGETS[backend])}.",
        )
    if result.request.backend != backend:
        raise InvalidRequest(
            f"the plan was made for {result.request.backend}, not {backend}",
            "Plan again with the same --backend (their context is counted differently).",
        )
    if not DEPLOYMENT_NAME_RE.fullmatch(name):
        raise InvalidRequest(f"invalid name {shown(name)}", DEPLOYMENT_NAME_HINT)
    profile_kind = result.profile.kind
    apple = profile_kind == "apple"
    if apple and target != "launchd":
        raise InvalidRequest(
            f"{result.profile.id} is a Mac: Docker on macOS runs a Linux VM that cannot reach "
            "the Metal GPU, and macOS has no systemd",
            "Use --target launchd (native, with Metal).",
        )
    if profile_kind == "amd" and target in ("compose", "k8s"):
        raise InvalidRequest(
            "ROCm device passthrough (/dev/kfd, /dev/dri) is not rendered yet: the container "
            "would silently run on the CPU",
            "Use --target systemd with a ROCm build of llama-server.",
        )
    if target == "launchd" and not apple:
        raise InvalidRequest("launchd runs on macOS only", "Use --target systemd or compose.")
    check_exposure(backend, expose=expose, insecure=insecure)


def default_target(result: PlanResult, backend: str) -> str:
    """launchd on a Mac, systemd where the profile runs the backend natively, else compose."""
    if result.profile.kind == "apple":
        return "launchd"
    runtime = result.profile.runtimes.get(backend)  # type: ignore[call-overload]
    if runtime is not None and runtime.mode == "native" and backend == "llamacpp":
        return "systemd"
    return "compose"


def model_alias(model: str) -> str:
    """The model name clients send (`--alias`): catalog id, ORG/REPO, or the file's stem."""
    return alias_of(model)


def llama_server_args(
    result: PlanResult,
    *,
    build: int,
    model_arg: str,
    host: str,
    port: int,
    api_key_file: str | None,
    load_mode: str | None = None,
    adapters: list[tuple[str, float]] | None = None,
) -> list[str]:
    """llama-server's arguments for this plan, spelled for `build`; refuses flags it lacks.
    `adapters`: each LoRA adapter's path as the server sees it, and its scale."""
    v = get_version(build)
    s = result.chosen.settings
    args = [v.require("-m"), model_arg, v.require("--host"), host, v.require("--port"), str(port)]
    args += [v.require("-c"), str(s.ctx), v.require("-np"), str(s.parallel)]
    if result.profile.kind != "cpu":
        args += [v.require("-ngl"), str(result.chosen.memory.n_gpu_layers)]
    if s.kv_type_k != "f16":
        args += [v.require("-ctk"), s.kv_type_k]
    if s.kv_type_v != "f16":
        args += [v.require("-ctv"), s.kv_type_v]
    args += flash_attn_args(v, s.flash_attention)
    args += [v.require("-ub"), str(s.n_ubatch), v.require("--alias"), model_alias(result.model)]
    facts = result.chosen.facts
    builtin = None if facts.has_chat_template else builtin_template(facts.arch)
    if builtin is not None:
        # No template in the GGUF: the family's built-in format, not llama-server's ChatML
        # fallback. Jinja must be off, or the name itself is read as a template and every
        # prompt becomes that one word (builds where Jinja is on by default need --no-jinja).
        if v.jinja_default_on:
            args.append(v.require("--no-jinja"))
        args += [v.require("--chat-template"), builtin]
    elif v.has("--jinja"):
        args.append("--jinja")  # the GGUF's own chat template, as the model was trained
    if v.has("--no-webui"):
        args.append("--no-webui")  # an API server: no browser UI surface
    if v.fit_default_on:
        # The plan already sized -c and -ngl; --fit would only add a slower trial load.
        args += [v.require("--fit"), "off"]
    args.append(v.require("--metrics"))
    if v.has("--cache-ram"):
        # The host prompt cache keeps the KV state of earlier prompts in RAM, up to 8 GiB by
        # default: set to what the plan holds for it (--prompt-cache, 0 by default: off), so a
        # container limit set from the plan never meets it as an OOM kill. Each slot still
        # reuses its own KV for a prompt that shares a prefix (docs/fit.md "Prompt cache").
        args += ["--cache-ram", str(s.prompt_cache_mib)]
    if v.has("--ctx-checkpoints"):
        # Sliding-window and recurrent models save a context checkpoint a completion, 32 a
        # slot by default, each as large as the slot's sliding-window KV: the plan holds
        # CTX_CHECKPOINTS of them (docs/fit.md "Context checkpoints").
        args += ["--ctx-checkpoints", str(CTX_CHECKPOINTS)]
    if s.prompt_cache_mib and not v.has("--cache-ram"):
        raise InvalidRequest(
            f"llama-server build {build} has no prompt cache (--cache-ram)",
            "Drop --prompt-cache, or use a newer --runtime-version.",
        )
    for path, scale in adapters or []:
        args += [v.require("--lora-scaled"), lora_scaled_value(path, scale)]
    args += load_mode_args(v, load_mode)
    if api_key_file is not None:
        args += [v.require("--api-key-file"), api_key_file]
    return args


def lora_scaled_value(path: str, scale: float) -> str:
    """`PATH:SCALE` as llama-server's --lora-scaled reads it (common/arg.cpp: the value is
    split at ',' into items, each at ':' into exactly two parts), so a path with ',', ':' or a
    quote cannot be passed: refused in one line."""
    bad = sorted({c for c in path if c in ',:"'})
    if bad:
        raise InvalidRequest(
            f"llama-server cannot load the LoRA adapter {shown(path)}: its --lora-scaled value "
            f"cannot carry {' '.join(repr(c) for c in bad)}",
            "Rename the file (or the folders above it) without them.",
        )
    return f"{path}:{scale!r}"


def _adapter_checks(result: PlanResult, backend: str, target: str) -> None:
    """What each server can do with adapters: Ollama's ADAPTER line has no scale, and a k8s
    bundle has no place for the adapter files yet."""
    if not result.adapters:
        return
    if target == "k8s":
        raise InvalidRequest(
            "--lora is not rendered for k8s yet (the adapter files have no volume there)",
            "Use --target compose or systemd.",
        )
    scaled = [a for a in result.adapters if a.scale != 1.0]
    if backend == "ollama" and scaled:
        raise InvalidRequest(
            f"Ollama's ADAPTER line has no scale (adapter {shown(scaled[0].ref)} asks for "
            f"{scaled[0].scale!r})",
            "Drop :SCALE for Ollama, or use --backend llamacpp.",
        )


def _check_inputs(fields: dict[str, object]) -> None:
    """Refuse, once, any outside value that no rendered file could carry: a line break or other
    control character, template syntax, or text that is not valid UTF-8."""
    hint = "Rename it: no file deployer renders can carry it safely."
    for what, value in fields.items():
        if value is None:
            continue
        try:
            check_line(str(value), "render", what)
            str(value).encode("utf-8")
        except UntrustedValue as exc:
            raise replace(exc, hint=hint) from None
        except UnicodeEncodeError:
            raise UntrustedValue("render", what, str(value), "is not valid UTF-8", hint) from None


def render_plan(
    result: PlanResult,
    *,
    backend: str,
    target: str | None = None,
    model_path: Path,
    port: int | None = None,
    expose: bool = False,
    insecure: bool = False,
    name: str | None = None,
    runtime_version: int = PINNED_BUILD,
    image: str | None = None,
    api_key_file: Path | None = None,
    load_mode: str | None = None,
    binary: str | None = None,
    log_dir: Path | None = None,
    pull_command: str | None = None,
    router: RouterSetup | None = None,
) -> RenderedBundle:
    """Render `result` for `backend` on `target`: files, container spec and native argv.

    With `router`, the bundle runs llama-server as a router over every model it names
    (deployer.core.serve.router); `result` is then the largest model's plan."""
    name = name or default_name(result.model)
    target = target or default_target(result, backend)
    profile, c = result.profile, result.chosen
    parts = _model_parts(model_path)
    _check_inputs(
        {
            "model reference": result.model,
            "profile id": profile.id,
            "quant label": c.facts.quant,
            "KV cache type": f"{c.settings.kv_type_k} {c.settings.kv_type_v}",
            "image": image,
            "API key file": api_key_file,
            "llama-server binary": binary,
            "log folder": log_dir,
            "pull command": pull_command,
            **{f"model path {i + 1}": p for i, p in enumerate(parts)},
            **{f"model path {n}": p for n, p in enumerate(router.model_paths if router else [])},
            **{f"LoRA adapter {i + 1}": a.path for i, a in enumerate(result.adapters)},
        }
    )
    _check_request(result, backend, target, expose, insecure, name)
    if router is not None and (backend != "llamacpp" or target == "launchd"):
        raise InvalidRequest(
            f"several models run behind llama-server's router with compose, systemd or k8s, "
            f"not {backend} via {target}",
            "Use --backend llamacpp and --target compose, systemd or k8s (or deploy).",
        )
    _adapter_checks(result, backend, target)
    adapter_dst = [str(cv.ADAPTER_DIR / f"lora-{i}.gguf") for i in range(len(result.adapters))]
    port = port or CONTAINER_PORT[backend]
    if not 1 <= port <= 65535:
        raise InvalidRequest(f"port {port} is out of range", "Use --port 1-65535.")
    if backend == "ollama" and len(parts) > 1:
        raise InvalidRequest(
            "Ollama cannot import a split GGUF",
            "Merge it with 'llama-gguf-split --merge', or use --backend llamacpp.",
        )
    runtime = profile.runtimes.get(backend)  # type: ignore[call-overload]
    native = target in ("systemd", "launchd")
    if native:
        image = None
    else:
        image = image or (runtime.image if runtime is not None else None)
        if image is None:
            raise InvalidRequest(f"profile {profile.id} names no {backend} image", "Pass --image.")
        if backend == "llamacpp":
            image = _pinned_image(image, runtime_version)
        else:
            image = pinned_ollama_image(image)
    gpu_ids = (
        [str(i) for i in range(profile.gpu.count)]
        if profile.kind == "nvidia" and profile.gpu and not native
        else []
    )
    if expose and backend == "llamacpp":
        if api_key_file is None:
            api_key_file = (
                Path(f"/etc/deployer/{name}/api_key")
                if target == "systemd"
                else Path("secrets/api_key")
            )
        if native and not api_key_file.is_absolute():
            raise InvalidRequest("the API key file of a native service needs an absolute path")
    else:
        api_key_file = None
    key_path = str(api_key_file) if api_key_file else None
    in_container = MODEL_DIR / parts[0].name
    host_model = str(parts[0])
    startup_s = startup_timeout_s(c.facts.weights.file_bytes)
    labels = {
        "io.deployer.name": name,
        "io.deployer.model": result.model,
        "io.deployer.quant": c.facts.quant,
        "io.deployer.backend": backend,
        "io.deployer.version": __version__,
    }
    if backend == "llamacpp":
        labels["io.deployer.runtime-version"] = f"b{runtime_version}"
        command = llama_server_args(
            result,
            build=runtime_version,
            model_arg=str(in_container),
            host="0.0.0.0",
            port=CONTAINER_PORT[backend],
            api_key_file=API_KEY_IN_CONTAINER if key_path else None,
            load_mode=load_mode,
            adapters=[(d, a.scale) for d, a in zip(adapter_dst, result.adapters, strict=True)],
        )
        native_args = [
            binary or DEFAULT_BINARY.get((backend, target), "llama-server"),
            *llama_server_args(
                result,
                build=runtime_version,
                model_arg=host_model,
                host="0.0.0.0" if expose else "127.0.0.1",
                port=port,
                api_key_file=key_path,
                load_mode=load_mode,
                # host paths, for a native server only (in a container they are mounted)
                adapters=[(str(a.path), a.scale) for a in result.adapters] if native else None,
            ),
        ]
        env: dict[str, str] = {}
    else:
        labels["io.deployer.runtime-version"] = OLLAMA_VERSION
        command = ["serve"]
        native_args = [binary or DEFAULT_BINARY.get((backend, target), "ollama"), "serve"]
        env = _ollama_env(result, "0.0.0.0" if not native else "127.0.0.1", port, native)
    mounts = [Mount(str(p), str(MODEL_DIR / p.name)) for p in parts]
    mounts += [Mount(str(a.path), d) for a, d in zip(result.adapters, adapter_dst, strict=True)]
    if backend == "ollama":
        mounts.append(Mount(ollama_volume(name), OLLAMA_HOME, read_only=False))
    health = HealthCheck(
        test=_health_test(backend, image or ""),
        interval_s=float(cv.HEALTH_INTERVAL_S),
        timeout_s=float(cv.HEALTH_TIMEOUT_S),
        retries=cv.HEALTH_RETRIES,
        start_period_s=float(startup_s),
    )
    limits = resource_limits(result)
    if router is not None:
        command = router_args(
            models_max=router.models_max, host="0.0.0.0", port=CONTAINER_PORT[backend],
            api_key_file=API_KEY_IN_CONTAINER if key_path else None,
        )  # fmt: skip
        native_args = [native_args[0], *router_args(
            models_max=router.models_max, host="0.0.0.0" if expose else "127.0.0.1", port=port,
            api_key_file=key_path, preset=router.native_preset or PRESET_FILE,
        )]  # fmt: skip
        labels = router_labels(labels, router)
        mounts = router_mounts(router)
        limits = router_limits(router, limits.pids * (router.models_max + 1))
    bundle = RenderedBundle(
        name=name,
        backend=backend,
        target=target,
        files={},
        image=image,
        command=command,
        native=native_args,
        labels=labels,
        env=env,
        mounts=mounts,
        health=health,
        host_ip="0.0.0.0" if expose else "127.0.0.1",
        host_port=port,
        container_port=CONTAINER_PORT[backend],
        user=NOBODY,
        gpus=gpu_ids,
        model_parameters=_ollama_parameters(result) if backend == "ollama" else {},
        model_template=_ollama_template(result) if backend == "ollama" else None,
        tmpfs=dict(OLLAMA_TMPFS) if backend == "ollama" else {},
        memory_limit_bytes=limits.memory_limit_bytes if target != "launchd" else None,
        pids_limit=limits.pids if target != "launchd" else None,
    )
    ctx: dict[str, Any] = {
        "b": bundle,
        "result": result,
        "profile": profile,
        "s": c.settings,
        "quant": c.facts.quant,
        "n_gpu_layers": c.memory.n_gpu_layers if profile.kind != "cpu" else 0,
        "gpu": profile.kind != "cpu",
        "expose": expose,
        "insecure": insecure,
        "port": port,
        "endpoint": f"http://127.0.0.1:{port}",
        "health_path": HEALTH_PATH[backend],
        "api_key_file": key_path,
        "api_key_in_container": API_KEY_IN_CONTAINER,
        "model_parts": [str(p) for p in parts],
        "model_in_container": str(in_container),
        "pull_command": pull_command,
        "alias": model_alias(result.model) if backend == "llamacpp" else name,
        "startup_s": startup_s,
        "file_gib": f"{c.facts.weights.file_bytes / GIB:.2f}",
        "volume_init": volume_init_command(NOBODY, OLLAMA_HOME),
        "runtime_version": runtime_version,
        "limits": limits,
        # Every other value a template prints, decided here (the templates only loop and
        # branch on booleans; see docs/render.md).
        "version": __version__,
        "llamacpp": backend == "llamacpp",
        "ollama": backend == "ollama",
        "compose": target == "compose",
        "systemd": target == "systemd",
        "launchd": target == "launchd",
        "k8s": target == "k8s",
        "apple_gpu": profile.kind == "apple",
        "show_limits": target != "launchd",
        "api_key_steps": key_path is not None and target != "k8s",
        "publish": f"{bundle.host_ip}:{port}:{bundle.container_port}",
        "tmpfs_mounts": [
            f"{path}:{opts}"
            for path, opts in (bundle.tmpfs or {TMP_DIR: tmpfs_options(TMP_SIZE_MIB)}).items()
        ],
        "uid": int(NOBODY.split(":")[0]),
        "gid": int(NOBODY.split(":")[1]),
        "root_user": ROOT_USER,
        "binary": native_args[0],
        "ollama_home": OLLAMA_HOME,
        "ollama_volume": ollama_volume(name),
        "ollama_host": env.get("OLLAMA_HOST", ""),
        "modelfile": MODELFILE,
        "modelfile_source": f"./{MODELFILE}",
        "modelfile_in_container": MODELFILE_IN_CONTAINER,
        "api_key_secret": PurePosixPath(API_KEY_IN_CONTAINER).name,
        "secrets_dir": str(PurePosixPath(API_KEY_IN_CONTAINER).parent),
        "model_dir": str(MODEL_DIR),
        # LoRA adapters: each one's file where the server reads it, its scale and id
        "adapters": [
            {
                "id": i,
                "ref": a.ref,
                "scale": repr(a.scale),
                "path": dst if not native else str(a.path),
                "host_path": str(a.path),
            }
            for i, (a, dst) in enumerate(zip(result.adapters, adapter_dst, strict=True))
        ],
    }
    ctx["router_preset_line"] = None
    ctx["is_router"] = router is not None
    if router is not None:
        ctx.update(model_parts=router.model_paths, model_in_container=str(MODEL_DIR),
                   alias=router.names[0], extra_files=[PRESET_FILE],
                   file_gib=f"{router.file_bytes_total / GIB:.2f}",
                   weights_bytes_total=router.file_bytes_total)  # fmt: skip
        if router.native_preset is not None:
            ctx["router_preset_line"] = sh_line(
                ["sudo", "install", "-D", "-m", "0644", PRESET_FILE, router.native_preset]
            )
    files = _files_for(backend, target, ctx, log_dir)
    if router is not None:
        files[PRESET_FILE] = router.preset_text
    for rel, text in files.items():
        check_rendered(rel, text, bundle)
    bundle.files = files
    return bundle


def _ollama_env(result: PlanResult, host: str, port: int, native: bool) -> dict[str, str]:
    """Ollama's server settings are environment variables, not Modelfile parameters."""
    s = result.chosen.settings
    env = {
        "OLLAMA_HOST": f"{host}:{port if native else CONTAINER_PORT['ollama']}",
        "OLLAMA_NUM_PARALLEL": str(s.parallel),
        "OLLAMA_MAX_LOADED_MODELS": "1",
        "OLLAMA_KEEP_ALIVE": "-1",  # keep the model loaded: health and first answer stay fast
        "OLLAMA_FLASH_ATTENTION": "1" if s.flash_attention else "0",
    }
    if s.kv_type_k != "f16":
        env["OLLAMA_KV_CACHE_TYPE"] = s.kv_type_k
    if not native:
        # The image's default store is /root/.ollama; user 65534 writes only to the volume.
        env["HOME"] = OLLAMA_HOME
        env["OLLAMA_MODELS"] = OLLAMA_MODELS_DIR
    return env


def volume_init_command(user: str, target: str) -> list[str]:
    """What the one-shot init container runs: give the volume's top folder to `user`."""
    return ["chown", user, target]


def ollama_volume(name: str) -> str:
    """The named volume that holds a container deployment's Ollama store."""
    return f"deployer-{name}-ollama"


def _ollama_format(result: PlanResult) -> OllamaFormat | None:
    facts = result.chosen.facts
    return None if facts.has_chat_template else ollama_format(facts.arch)


def _ollama_parameters(result: PlanResult) -> dict[str, Any]:
    """The Modelfile PARAMETERs, also sent as `parameters` by the API create step."""
    params: dict[str, Any] = {"num_ctx": result.chosen.settings.ctx}
    if result.profile.kind != "cpu":
        params["num_gpu"] = result.chosen.memory.n_gpu_layers
    fmt = _ollama_format(result)
    if fmt is not None:
        params["stop"] = list(fmt.stop)
    return params


def _ollama_template(result: PlanResult) -> str | None:
    """A TEMPLATE for a GGUF without a chat template, when its family's format is known."""
    fmt = _ollama_format(result)
    return fmt.template if fmt is not None else None


def _render(template: str, ctx: dict[str, Any], **extra: Any) -> str:
    return template_env().get_template(template).render(**ctx, **extra)


def _files_for(
    backend: str, target: str, ctx: dict[str, Any], log_dir: Path | None
) -> dict[str, str]:
    b: RenderedBundle = ctx["b"]
    files: dict[str, str] = {}
    health_url = f"{ctx['endpoint']}{ctx['health_path']}"
    ctx = {**ctx, "health_url": health_url, "watchdog_every_s": cv.WATCHDOG_EVERY_S}
    if backend == "ollama":
        model_from = ctx["model_in_container"] if target == "compose" else ctx["model_parts"][0]
        params = {k: v for k, v in b.model_parameters.items() if k != "stop"}
        files[MODELFILE] = _render(
            "ollama/Modelfile.j2",
            ctx,
            model_from=model_from,
            parameters=params,
            stop_tokens=b.model_parameters.get("stop", []),
        )
        files["create.sh"] = _render("ollama/create.sh.j2", ctx)
    if target == "compose":
        files["docker-compose.yml"] = _render(f"{backend}/docker-compose.yml.j2", ctx)
    elif target == "systemd":
        ctx = {**ctx, **_systemd_context(b, ctx)}
        for template, rel in (
            ("llama-server.service", ctx["service_file"]),
            ("health.service", ctx["health_service_file"]),
            ("health.timer", ctx["health_timer_file"]),
        ):
            files[rel] = _render(f"systemd/{template}.j2", ctx)
    elif target == "launchd":
        ctx = {**ctx, **_launchd_context(b, ctx, log_dir)}
        files[ctx["plist_file"]] = _render("launchd/server.plist.j2", ctx)
        files[ctx["health_plist_file"]] = _render("launchd/health.plist.j2", ctx)
    elif target == "k8s":
        ctx = {**ctx, **_k8s_context(b, ctx)}
        for kind in ("deployment", "service", "pvc", "model-loader"):
            files[f"{kind}.yaml"] = _render(f"k8s/{kind}.yaml.j2", ctx)
    # A router answers /metrics per model (?model=NAME), and asking loads that model: one
    # scrape config for the server would not work, so a router bundle has none yet.
    if backend == "llamacpp" and not ctx.get("is_router"):
        files.update(_monitoring_files(b, ctx))
    pull = ctx["pull_command"]
    files["README.md"] = _render(
        "readme/README.md.j2",
        ctx,
        files=sorted([*files, "README.md", *ctx.get("extra_files", [])]),
        shell_argv=sh_line(b.native),
        # The pull line is re-split and re-quoted word by word: only quoted words reach it.
        pull_line=sh_line(shlex.split(pull)) if pull else None,
        curl_health=sh_line(["curl", "-fsS", health_url]),
        curl_chat=_curl_chat(ctx),
    )
    return files


def _monitoring_files(b: RenderedBundle, ctx: dict[str, Any]) -> dict[str, str]:
    """The Prometheus scrape config and the Grafana dashboard of a llama.cpp deployment."""
    s = ctx["s"]
    key = ctx["api_key_file"]
    target = ScrapeTarget(
        name=b.name,
        address=f"127.0.0.1:{ctx['port']}",
        key_file=key,
        k8s=b.target == "k8s",
        k8s_secret=f"{b.name}-api-key" if key else None,
        k8s_port=b.container_port,
    )
    return {
        PROMETHEUS_FILE: scrape_config(target),
        DASHBOARD_FILE: dashboard(b.name, max(1, s.ctx // max(1, s.parallel))),
    }


def _systemd_context(b: RenderedBundle, ctx: dict[str, Any]) -> dict[str, Any]:
    """What the systemd units (and the README's systemd steps) print."""
    unit = f"deployer-{b.name}"
    health_url = ctx["health_url"]
    model_path = ctx["model_parts"][0]
    read_only = [*ctx["model_parts"], *(a["host_path"] for a in ctx["adapters"])]
    # A model (or adapter) under a home directory stays readable; every other home is hidden.
    in_home = any(p.startswith(("/home/", "/root/")) for p in read_only)
    del model_path
    check = (
        f"code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time {cv.WATCHDOG_MAX_TIME_S} "
        f'{health_url}); [ "$code" != 000 ] || systemctl restart {unit}.service'
    )
    exec_words = [sd_word(a, executable=i == 0) for i, a in enumerate(b.native)]
    if "--api-key-file" in b.native:
        # systemd hands the key over as a credential, in the unit's own directory (%d).
        exec_words[b.native.index("--api-key-file") + 1] = Quoted(f"%d/{cv.CREDENTIAL}", "systemd")
    # Started means healthy: poll until the load time is over.
    ready = ["/usr/bin/curl", "-fsS", "-o", "/dev/null", "--max-time", str(cv.READY_MAX_TIME_S)]
    ready += ["--retry", str(math.ceil(ctx["startup_s"] / cv.READY_POLL_S))]
    ready += ["--retry-delay", str(cv.READY_POLL_S), "--retry-all-errors", health_url]
    return {
        "unit": unit,
        "service_file": f"{unit}.service",
        "health_service_file": f"{unit}-health.service",
        "health_timer_file": f"{unit}-health.timer",
        "exec_start": Quoted(" ".join(exec_words), "systemd"),
        "load_credential": sd_text(f"{cv.CREDENTIAL}:{ctx['api_key_file']}"),
        "exec_start_post": sd_line(ready),
        "read_only_paths": Quoted(" ".join(sd_path(p) for p in read_only), "systemd"),
        "timeout_start_s": ctx["startup_s"] + cv.START_GRACE_S,
        "timeout_stop_s": cv.STOP_TIMEOUT_S,
        "restart_delay_s": cv.RESTART_DELAY_S,
        "timer_accuracy_s": cv.WATCHDOG_ACCURACY_S,
        "protect_home_read_only": in_home,
        "private_devices": not ctx["gpu"],
        "health_exec": sd_line(["/bin/sh", "-c", check]),
    }


def _launchd_context(
    b: RenderedBundle, ctx: dict[str, Any], log_dir: Path | None
) -> dict[str, Any]:
    """What the launchd plists (and the README's launchd steps) print."""
    label = f"io.deployer.{b.name}"
    logs = log_dir or Path.home() / "Library" / "Logs" / "deployer"
    check = (
        f"code=$(/usr/bin/curl -s -o /dev/null -w '%{{http_code}}' --max-time "
        f'{cv.WATCHDOG_MAX_TIME_S} {ctx["health_url"]}); [ "$code" != 000 ] || '
        f'/bin/launchctl kickstart -k "gui/$(id -u)/{label}"'
    )
    return {
        "label": label,
        "health_label": f"{label}.health",
        "plist_file": f"{label}.plist",
        "health_plist_file": f"{label}.health.plist",
        "log_dir": str(logs),
        "stdout_path": str(logs / f"{b.name}.log"),
        "stderr_path": str(logs / f"{b.name}.err.log"),
        "health_log": str(logs / f"{b.name}.health.log"),
        "health_args": ["/bin/sh", "-c", check],
        "env": b.env,
        "throttle_s": cv.LAUNCHD_THROTTLE_S,
    }


@dataclass(frozen=True)
class Probe:
    """One k8s HTTP probe's timings."""

    period_s: int
    timeout_s: int
    failures: int


def _k8s_context(b: RenderedBundle, ctx: dict[str, Any]) -> dict[str, Any]:
    """What the k8s manifests (and the README's kubectl steps) print."""
    # A router's volume holds every model (deployer.core.serve.router).
    file_bytes = ctx.get("weights_bytes_total") or ctx["result"].chosen.facts.weights.file_bytes
    loader = f"{b.name}-model-loader"
    return {
        "secret_name": f"{b.name}-api-key",
        "pvc_name": f"{b.name}-model",
        "pvc_gib": math.ceil(file_bytes * (1 + cv.PVC_HEADROOM_PCT / 100) / GIB),
        "pvc_headroom_pct": cv.PVC_HEADROOM_PCT,
        "gpu_count": len(b.gpus),
        "probes": {
            "startupProbe": Probe(
                cv.STARTUP_PERIOD_S,
                cv.HEALTH_TIMEOUT_S,
                math.ceil(ctx["startup_s"] / cv.STARTUP_PERIOD_S),
            ),
            "readinessProbe": Probe(cv.HEALTH_INTERVAL_S, cv.HEALTH_TIMEOUT_S, cv.HEALTH_RETRIES),
            "livenessProbe": Probe(cv.LIVENESS_PERIOD_S, cv.HEALTH_TIMEOUT_S, cv.HEALTH_RETRIES),
        },
        "tmp_dir": TMP_DIR,
        "tmp_size": f"{TMP_SIZE_MIB}Mi",
        "loader_name": loader,
        "loader_image": cv.LOADER_IMAGE,
        "loader_command": cv.LOADER_COMMAND,
        "loader_pod": f"pod/{loader}",
        "loader_wait": f"--timeout={cv.LOADER_WAIT_S}s",
        "loader_copies": [(m.source, f"{loader}:{m.target}") for m in b.mounts],
        "secret_from_file": f"--from-file={PurePosixPath(API_KEY_IN_CONTAINER).name}="
        f"{ctx['api_key_file']}",
        "deployment_ref": f"deployment/{b.name}",
        "service_ref": f"service/{b.name}",
        "rollout_wait": f"--timeout={ctx['startup_s'] + cv.ROLLOUT_GRACE_S}s",
        "port_forward": f"{ctx['port']}:{ctx['port']}",
        "scrape_annotations": k8s_annotations(b.container_port),
    }


def _curl_chat(ctx: dict[str, Any]) -> Quoted:
    """One short chat completion through the OpenAI-compatible API; the key read from its file."""
    body = {
        "model": ctx["alias"],
        "messages": [{"role": "user", "content": cv.SMOKE_PROMPT}],
        "max_tokens": cv.SMOKE_MAX_TOKENS,
    }
    words = [
        "curl",
        "-fsS",
        f"{ctx['endpoint']}/v1/chat/completions",
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps(body),
    ]
    cmd = str(sh_line(words))
    key = ctx["api_key_file"]
    if key:
        reader = "sudo cat" if ctx["b"].target == "systemd" else "cat"
        # Inside "$( )" the shell parses a fresh command: the quoted path stays one word.
        cmd += f' -H "Authorization: Bearer $({reader} {sh(key)})"'
    return Quoted(cmd, "sh")
