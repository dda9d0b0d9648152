"""The deploy use case: plan, pull, choose the image, serve, wait healthy, prove, record.

deployer.cli.deploy parses flags and calls deploy_model once; every real edge (engine, Hub
store, ports, keys, the native supervisor, the smoke test) arrives in DeployEdges, built by
deployer.cli.wiring. The server itself is one of the Server implementations in
deployer.core.serve.servers, run by serve_and_prove.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from deployer.core.clock import Clock
from deployer.core.errors import InvalidRequest
from deployer.core.fit.plan import PlanResult
from deployer.core.hardware.profiles import Profile
from deployer.core.model.facts import ModelFacts
from deployer.core.model.ref import CatalogRef, DemoRef, HubRef, ModelRef
from deployer.core.pull.files import HubStore, LocalFiles, PullResult, pull_model
from deployer.core.serve.containers import ContainerEngine
from deployer.core.serve.deploy import (
    DeployResult,
    SmokeTester,
    check_name_free,
    serve_and_prove,
    smoke_kind_for,
    with_limits,
)
from deployer.core.serve.host import DeployHost
from deployer.core.serve.keys import SecretStore
from deployer.core.serve.prepare import (
    PlanInputs,
    Planner,
    RenderOptions,
    WeightsLocation,
    deployment_name,
    plan_fitting,
    prepare,
)
from deployer.core.serve.render import RenderedBundle, check_exposure, running_image
from deployer.core.serve.servers import (
    LlamaContainer,
    ModelCreator,
    NativeProcess,
    OllamaContainer,
    ProcessRuntime,
    Server,
    container_spec_for,
)
from deployer.core.serve.specs import ContainerSpec
from deployer.core.state.records import check_name
from deployer.core.state.store import RecordStore
from deployer.core.units import MIB, fmt_bytes, parse_bytes
from deployer.core.untrusted import check_port


@dataclass(frozen=True)
class DeployRequest:
    """What `deployer deploy` was asked for."""

    ref: ModelRef
    profile: Profile
    inputs: PlanInputs
    name: str | None = None
    port: int | None = None
    expose: bool = False
    insecure: bool = False
    image: str | None = None
    runtime: str = "container"  # or native
    accept_license: bool = False
    timeout_s: float | None = None
    dry_run: bool = False
    memory_limit_bytes: int | None = None  # --memory-limit; None: the plan's limit


def check_flags(
    *, backend: str, port: int | None, expose: bool, insecure: bool, timeout_s: float | None,
    runtime: str | None, memory_limit: str | None = None,
) -> None:  # fmt: skip
    """Refuse flags that cannot work, before any profile, plan or download."""
    if port is not None:
        check_port(port, "--port")  # 0 would otherwise mean "pick one", not port 0
    check_exposure(backend, expose=expose, insecure=insecure)  # before any download
    if timeout_s is not None and not 0 < timeout_s <= 86400:  # NaN and inf fail too
        raise InvalidRequest(f"--timeout {timeout_s:g} is not in (0, 86400] seconds")
    if runtime not in (None, "container", "native"):
        raise InvalidRequest(f"unknown runtime '{runtime}'", "Use container or native.")
    if memory_limit is not None:
        parse_memory_limit(memory_limit)
        if runtime == "native":
            raise InvalidRequest(
                "--memory-limit caps a container; the native runtime has none",
                "Drop --memory-limit, or use --runtime container.",
            )


MIN_MEMORY_LIMIT_BYTES = 6 * MIB  # Docker refuses a smaller --memory


def parse_memory_limit(text: str) -> int:
    """--memory-limit as bytes ('300M', '2G', '1536Mi'); InvalidRequest when it is not a size."""
    n = parse_bytes(text)
    if n is None or n < MIN_MEMORY_LIMIT_BYTES:
        raise InvalidRequest(
            f"--memory-limit {text!r} is not a memory size of at least 6 MiB",
            "Use a number with K, M or G (1024-based), e.g. --memory-limit 300M.",
        )
    return n


def runtime_for(profile: Profile, runtime: str | None, backend: str) -> str:
    """--runtime, else native on a Mac and a container elsewhere; native runs llama.cpp only."""
    how = runtime or ("native" if profile.kind == "apple" else "container")
    if how == "native" and backend != "llamacpp":
        raise InvalidRequest(
            "the native runtime runs llama-server only",
            "Use --backend llamacpp, or --runtime container.",
        )
    return how


class PortPicker(Protocol):
    """Chooses and checks host ports (deployer.adapters.ports)."""

    def choose(self, name: str, requested: int | None, host_ip: str) -> tuple[int, str]:
        """The port to publish on and why."""
        ...

    def check_free(self, host_ip: str, port: int) -> None:
        """PortInUse when something listens there."""
        ...


class ImageChooser(Protocol):
    """The image to run and why (deployer.core.serve.image_choice.choose_image, wired)."""

    def __call__(
        self, engine: ContainerEngine, official: str, kind: str, given: str | None, backend: str
    ) -> tuple[str, str]: ...


class NativeHost(Protocol):
    """The local llama-server binary, its supervisor and its log (deployer.adapters.native)."""

    def binary(self) -> Path:
        """The llama-server to run."""
        ...

    def supervisor(self) -> ProcessRuntime:
        """Starts, watches and stops it."""
        ...

    def log_path(self, name: str) -> Path:
        """Where its output goes."""
        ...


@dataclass(frozen=True)
class DeployEdges:
    """The real (or fake) systems deploy talks to; deployer.cli.wiring builds them."""

    planner: Planner
    ports: PortPicker
    hub_store: Callable[[], HubStore]
    engine: Callable[[], ContainerEngine]
    choose_image: ImageChooser
    locate_weights: Callable[[ModelRef, ModelFacts], WeightsLocation]
    keys: SecretStore
    records: RecordStore
    clock: Clock
    host: DeployHost
    files: LocalFiles
    native: NativeHost
    llama_smoke: SmokeTester
    ollama_smoke: SmokeTester
    ollama_create: ModelCreator
    say: Callable[[str], None]


@dataclass
class DryRun:
    """What a deploy would run: the --dry-run output."""

    out: dict[str, Any]
    files: dict[str, str]
    native: bool


Progress = Callable[[float, str], None] | None


def deploy_model(
    req: DeployRequest, edges: DeployEdges, progress: Progress
) -> DeployResult | DryRun:
    """Deploy `req.ref` and prove it; with dry_run, only what would run."""
    backend = req.inputs.backend
    result = plan_fitting(req.ref, req.profile, req.inputs, edges.planner)
    if backend == "ollama" and req.inputs.adapters:
        raise InvalidRequest(
            "deploy --backend ollama does not load LoRA adapters yet",
            "Use --backend llamacpp, or 'deployer render --backend ollama --lora ...' "
            "(its Modelfile carries the ADAPTER line).",
        )
    name = deployment_name(result, req.name)
    # The name first: a refusal must come before any key, file, volume or container.
    check_name_free(check_name(name), records=edges.records)
    host_ip = "0.0.0.0" if req.expose else "127.0.0.1"
    port, why = edges.ports.choose(name, req.port, host_ip)
    if not req.dry_run:
        edges.ports.check_free(host_ip, port)  # before the download, not after it
    port_note = f"port: {port} ({why})"
    if req.runtime == "native":
        if not req.dry_run:
            edges.say(port_note)
        return _deploy_native(req, edges, result, name, port, progress)
    options = RenderOptions(
        backend=backend, target="compose", port=port, expose=req.expose, insecure=req.insecure,
        image=req.image,
    )  # fmt: skip
    if req.dry_run:
        return _dry_run(req, edges, result, name, options)
    engine = edges.engine()
    engine.engine_available()
    check_name_free(
        name, engine, records=edges.records
    )  # a labelled container without a record: the same
    chosen = result.chosen
    edges.say(
        f"plan: {result.model} {chosen.facts.quant} on {req.profile.id} "
        f"(ngl {chosen.memory.n_gpu_layers}, ctx {chosen.settings.ctx})"
    )
    edges.say(port_note)
    pulled = _pull(req, edges, result)
    edges.say(f"weights: {pulled.path} (verified: {all(f.verified for f in pulled.files)})")
    bundle = prepare(req.ref, result, name=name, locate=_at(pulled), options=options).bundle
    run_image, image_note = edges.choose_image(
        engine, bundle.image or "", req.profile.kind, req.image, backend
    )
    edges.say(f"image: {image_note}")
    bundle = running_image(bundle, run_image)
    server: Server
    key_file = None
    attempt = edges.host.attempt_id()
    if backend == "ollama":
        if req.expose:
            edges.say("warning: --expose --insecure: Ollama has no API key; anyone who "
                      f"reaches port {port} can use the server")  # fmt: skip
        spec = _limited(container_spec_for(bundle, None, attempt=attempt), result, edges, req)
        server = OllamaContainer(
            engine, bundle, spec, image_note, create=edges.ollama_create, model_path=pulled.path
        )
    else:
        key_file = edges.keys.write_api_key(name, for_container=True) if req.expose else None
        spec = _limited(container_spec_for(bundle, key_file, attempt=attempt), result, edges, req)
        server = LlamaContainer(
            engine, bundle, spec, image_note, plan_bytes=result.chosen.memory.host.total_bytes
        )
    _warn_limit_under_plan(req, edges, result, spec)
    smoke = edges.ollama_smoke if backend == "ollama" else edges.llama_smoke
    return _serve(req, edges, result, bundle, server, smoke, pulled, key_file, progress)


def _limited(
    spec: ContainerSpec, result: PlanResult, edges: DeployEdges, req: DeployRequest
) -> ContainerSpec:
    return with_limits(
        spec, result, host_cpus=edges.host.cpu_count(), memory_limit_bytes=req.memory_limit_bytes
    )


def _warn_limit_under_plan(
    req: DeployRequest, edges: DeployEdges, result: PlanResult, spec: ContainerSpec
) -> None:
    """Say so when --memory-limit is under what the plan says the server holds."""
    need = result.chosen.memory.host.total_bytes
    if req.memory_limit_bytes is not None and req.memory_limit_bytes < need:
        edges.say(
            f"warning: --memory-limit {fmt_bytes(req.memory_limit_bytes)} is under the plan's "
            f"{fmt_bytes(need)}: expect the server to be OOM-killed or to thrash"
        )
    elif spec.memory_limit_bytes is not None:
        edges.say(
            f"memory limit: {fmt_bytes(spec.memory_limit_bytes)} "
            f"(plan {fmt_bytes(need)} + headroom)"
            if req.memory_limit_bytes is None
            else f"memory limit: {fmt_bytes(spec.memory_limit_bytes)} (--memory-limit)"
        )


def _serve(
    req: DeployRequest, edges: DeployEdges, result: PlanResult, bundle: RenderedBundle, server: Server,
    smoke: SmokeTester, pulled: PullResult, key_file: Path | None, progress: Progress,
) -> DeployResult:  # fmt: skip
    check_name_free(bundle.name, records=edges.records)  # asked again: a deploy of the same
    # name may have finished meanwhile
    return serve_and_prove(
        result=result, bundle=bundle, server=server, smoke=smoke,
        model_files=[f.path for f in pulled.files], api_key_file=key_file,
        records=edges.records, keys=edges.keys, clock=edges.clock,
        on_progress=progress, timeout_s=req.timeout_s,
    )  # fmt: skip


def _pull(req: DeployRequest, edges: DeployEdges, result: PlanResult) -> PullResult:
    """The weights, present and verified (the Hub store only for Hub and catalog models)."""
    hub = isinstance(req.ref, HubRef | CatalogRef)
    # The demo is pulled with the quant asked for (it has one); the others with the plan's.
    quant = req.inputs.quant if isinstance(req.ref, DemoRef) else result.chosen.facts.quant
    store = edges.hub_store() if hub else None
    return pull_model(
        req.ref, quant, store=store, accept_license=req.accept_license, files=edges.files,
        clock=edges.clock,
    )  # fmt: skip


def _at(pulled: PullResult) -> Callable[[ModelRef, ModelFacts], WeightsLocation]:
    """A locator for weights already pulled."""
    return lambda _ref, _facts: WeightsLocation(pulled.path)


def _dry_run(
    req: DeployRequest, edges: DeployEdges, result: PlanResult, name: str, options: RenderOptions
) -> DryRun:
    """The plan, files and container spec a deploy would use; nothing pulled from the Hub."""
    backend = options.backend

    def locate(ref: ModelRef, facts: ModelFacts) -> WeightsLocation:
        if isinstance(ref, HubRef | CatalogRef):
            return WeightsLocation(edges.locate_weights(ref, facts).path)
        pulled = pull_model(ref, req.inputs.quant, files=edges.files, clock=edges.clock)
        return WeightsLocation(pulled.path)  # demo, a local file

    prepared = prepare(req.ref, result, name=name, locate=locate, options=options)
    bundle, weights_path = prepared.bundle, prepared.weights.path
    spec = bundle.container_spec()
    if backend == "llamacpp":
        spec = _limited(spec, result, edges, req)  # as a deploy runs it
        _warn_limit_under_plan(req, edges, result, spec)
    key_note = "(generated at deploy time)" if req.expose and backend == "llamacpp" else None
    out: dict[str, Any] = {
        "plan": result.as_dict(),
        "weights": str(weights_path),
        "files": bundle.files,
        "container": {
            "name": spec.name,
            "image": spec.image,
            "command": spec.command,
            "labels": spec.labels,
            "mounts": [m.__dict__ for m in spec.mounts],
            "ports": f"{spec.host_ip}:{spec.host_port}->{spec.container_port}",
            "user": spec.user,
            "gpus": spec.gpus,
            "read_only_rootfs": spec.read_only_rootfs,
            "cap_drop": spec.cap_drop,
            "security_opt": spec.security_opt,
            "health": spec.health.__dict__ if spec.health else None,
            "api_key_file": key_note,
            "env": spec.env,
            "tmpfs": spec.tmpfs,
            "restart_policy": spec.restart_policy,
            "memory_limit_bytes": spec.memory_limit_bytes,
            "pids_limit": spec.pids_limit,
            "volumes": [v.__dict__ for v in bundle.volume_specs()],
        },
    }
    if backend == "ollama":
        proof_step = (
            "POST /v1/chat/completions (8 tokens)"
            if smoke_kind_for(result) == "chat"
            else "POST /api/generate (raw completion, 8 tokens)"
        )
        out["ollama_create"] = {
            "model": name,
            "from": str(weights_path),
            "parameters": bundle.model_parameters,
            "template": bundle.model_template,
            "steps": ["GET /api/version", "POST /api/blobs/sha256:<digest> (once)",
                      "POST /api/create", proof_step],
        }  # fmt: skip
    return DryRun(out, bundle.files, native=False)


def _deploy_native(
    req: DeployRequest, edges: DeployEdges, result: PlanResult, name: str, port: int,
    progress: Progress,
) -> DeployResult | DryRun:  # fmt: skip
    """llama-server as a supervised local process."""
    check_name_free(name, records=edges.records)  # before a new key could touch the running one's
    binary = edges.native.binary()
    pulled = _pull(req, edges, result)
    options = RenderOptions(
        backend="llamacpp", target="launchd" if result.profile.kind == "apple" else "systemd",
        port=port, expose=req.expose, binary=str(binary),
        api_key_file=edges.keys.api_key_path(name) if req.expose else None,
    )  # fmt: skip
    bundle = prepare(req.ref, result, name=name, locate=_at(pulled), options=options).bundle
    if req.dry_run:
        out = {"plan": result.as_dict(), "weights": str(pulled.path), "argv": bundle.native_argv()}
        return DryRun(out, {}, native=True)
    edges.say(f"weights: {pulled.path} (verified: {all(f.verified for f in pulled.files)})")
    edges.say(f"server: {binary} (native, pid and log under the state dir)")
    key_file = edges.keys.write_api_key(name, for_container=False) if req.expose else None
    server = NativeProcess(edges.native.supervisor(), bundle, edges.native.log_path(name))
    return _serve(req, edges, result, bundle, server, edges.llama_smoke, pulled, key_file, progress)
