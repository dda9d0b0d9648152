"""Several models on one host: plan each, check the sets that load together, render the router,
deploy it (deployer.core.serve.router has the names and the preset; fit/multi.py the sets).

The router container is a llama.cpp container like any other (LlamaContainer, serve_and_prove):
its command is the router's, its mounts every model read-only plus the preset, its memory limit
the largest set's plan, and its proof a completion from the first model, by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from deployer.core.errors import InvalidRequest
from deployer.core.fit.multi import MultiPlan, check_max_loaded, explain, plan_models
from deployer.core.fit.plan import PlanResult
from deployer.core.hardware.profiles import Profile
from deployer.core.model.facts import ModelFacts
from deployer.core.model.ref import CatalogRef, DemoRef, HubRef, ModelRef, parse_model_ref
from deployer.core.pull.files import PullResult, pull_model
from deployer.core.serve.deploy import DeployResult, check_name_free, serve_and_prove, with_limits
from deployer.core.serve.deploy_flow import DeployEdges, DryRun, Progress
from deployer.core.serve.llama_flags import PINNED_BUILD
from deployer.core.serve.prepare import (
    PlanInputs,
    Planner,
    RenderOptions,
    WeightsLocation,
    unservable_reason,
)
from deployer.core.serve.render import RenderedBundle, llama_server_args, render_plan
from deployer.core.serve.router import (
    PRESET_FILE,
    ModelEntry,
    RouterSetup,
    model_in_container,
    native_preset_path,
    preset_section,
    render_preset,
)
from deployer.core.serve.servers import LlamaContainer, container_spec_for
from deployer.core.state.records import check_name
from deployer.core.units import fmt_bytes


def plan_several(
    entries: list[ModelEntry],
    profile: Profile,
    inputs: PlanInputs,
    planner: Planner,
    max_loaded: int | None,
) -> MultiPlan:
    """Each model planned as `deployer plan` plans it, and the sets that load together."""
    if inputs.backend != "llamacpp":
        raise InvalidRequest(
            "several models on one endpoint need llama-server's router", "Use --backend llamacpp."
        )
    n = check_max_loaded(max_loaded, len(entries))
    results = [
        planner(parse_model_ref(e.ref_text), profile, quant=e.quant or inputs.quant,
                ctx=e.ctx or inputs.ctx, parallel=inputs.parallel, kv_type=inputs.kv_type,
                backend=inputs.backend, load_mode=inputs.load_mode,
                prompt_cache_mib=inputs.prompt_cache_mib)
        for e in entries
    ]  # fmt: skip
    return plan_models([e.name for e in entries], results, n)


def require_fit(plan: MultiPlan) -> None:
    """Refuse a router deployment whose sets of --max-loaded models do not all fit, or that
    names a model llama-server cannot serve for completions."""
    for result in plan.results:
        problem = unservable_reason(result)
        if problem is not None:
            raise InvalidRequest(problem, "Leave it out: deployer serves text-generation models.")
    if not plan.fits:
        raise InvalidRequest(
            f"these models do not fit {plan.results[0].profile.id} as asked: {explain(plan)}",
            "Lower --max-loaded, --ctx or the models' quants; 'deployer plan' with the same "
            "models lists every set.",
        )


def plan_json(plan: MultiPlan, base: dict[str, Any]) -> dict[str, Any]:
    """The largest model's plan fields, `fits` for the whole set, `models` and `router`."""
    return {**base, "fits": plan.fits, "models": plan.models_list(), "router": plan.as_dict()}


def largest_result(plan: MultiPlan) -> PlanResult:
    """The plan of the largest model: the bundle's base (image, health wait, proof kind)."""
    return max(plan.results, key=lambda r: r.chosen.facts.weights.file_bytes)


def preset_text(
    plan: MultiPlan, *, build: int = PINNED_BUILD, host_paths: list[str] | None = None
) -> str:
    """The preset INI: each model's planned llama-server arguments under its name; the model
    at its place in the container, or at `host_paths` (a native service)."""
    sections = {}
    for i, (name, result) in enumerate(zip(plan.names, plan.results, strict=True)):
        model = host_paths[i] if host_paths else model_in_container(name)
        args = llama_server_args(
            result, build=build, model_arg=model_in_container(name), host="127.0.0.1", port=0,
            api_key_file=None, load_mode=result.request.load_mode,
        )  # fmt: skip
        sections[name] = [("model", model), *preset_section(args)]
    return render_preset(sections)


def render_several(
    plan: MultiPlan,
    *,
    name: str,
    paths: list[Path],
    options: RenderOptions,
    preset_source: str | None = None,
) -> RenderedBundle:
    """The router's bundle: compose file, preset, README and container spec."""
    for p in paths:
        if p.name.endswith(".gguf") and "-of-" in p.name:
            raise InvalidRequest(
                f"{p.name} is one part of a split GGUF; a router model is one file",
                "Merge it with 'llama-gguf-split --merge' first.",
            )
    base = largest_result(plan)
    native = options.target == "systemd"
    setup = RouterSetup(
        names=plan.names,
        quants=[r.chosen.facts.quant for r in plan.results],
        model_paths=[str(p) for p in paths],
        preset_text=preset_text(
            plan,
            build=options.runtime_version,
            host_paths=[str(p) for p in paths] if native else None,
        ),
        # Beside the rendered files: compose resolves ./ from its file, kubectl cp from the shell.
        preset_source=preset_source
        or (PRESET_FILE if options.target == "k8s" else f"./{PRESET_FILE}"),
        models_max=plan.max_loaded,
        memory_request_bytes=plan.memory_request_bytes,
        native_preset=native_preset_path(name) if native else None,
        file_bytes_total=sum(r.chosen.facts.weights.file_bytes for r in plan.results),
    )
    base_path = paths[plan.results.index(base)]
    return render_plan(
        base, backend="llamacpp", target=options.target or "compose", model_path=base_path,
        port=options.port, expose=options.expose, name=name,
        runtime_version=options.runtime_version, image=options.image,
        api_key_file=options.api_key_file, load_mode=options.load_mode, router=setup,
    )  # fmt: skip


class PresetStore(Protocol):
    """Where a deployed router's preset file lives (deployer.adapters.router_files)."""

    def write_preset(self, name: str, text: str) -> Path:
        """Write `name`'s preset (readable by the container user) and return its path."""
        ...

    def discard(self, name: str) -> None:
        """Remove `name`'s preset, if any."""
        ...

    def release(self, name: str) -> None:
        """`name`'s deploy is recorded: its preset is no longer a deploy in progress."""
        ...


@dataclass(frozen=True)
class SeveralRequest:
    """What `deployer deploy MODEL MODEL... --name NAME` was asked for."""

    entries: list[ModelEntry]
    profile: Profile
    inputs: PlanInputs
    name: str
    max_loaded: int | None = None
    port: int | None = None
    expose: bool = False
    image: str | None = None
    accept_license: bool = False
    timeout_s: float | None = None
    dry_run: bool = False
    memory_limit_bytes: int | None = None


def _pull(req: SeveralRequest, edges: DeployEdges, e: ModelEntry, r: PlanResult) -> PullResult:
    ref = parse_model_ref(e.ref_text)
    quant = (e.quant or req.inputs.quant) if isinstance(ref, DemoRef) else r.chosen.facts.quant
    store = edges.hub_store() if isinstance(ref, HubRef | CatalogRef) else None
    return pull_model(ref, quant, store=store, accept_license=req.accept_license,
                      files=edges.files, clock=edges.clock)  # fmt: skip


def _locate(req: SeveralRequest, edges: DeployEdges) -> Callable[[ModelEntry, PlanResult], Path]:
    def locate(e: ModelEntry, r: PlanResult) -> Path:
        ref: ModelRef = parse_model_ref(e.ref_text)
        if isinstance(ref, HubRef | CatalogRef):
            return edges.locate_weights(ref, r.chosen.facts).path
        quant = e.quant or req.inputs.quant
        return pull_model(ref, quant, files=edges.files, clock=edges.clock).path

    return locate


def deploy_several(
    req: SeveralRequest, edges: DeployEdges, presets: PresetStore, progress: Progress
) -> DeployResult | DryRun:
    """Serve every model behind one router container and prove the first one by name."""
    plan = plan_several(req.entries, req.profile, req.inputs, edges.planner, req.max_loaded)
    require_fit(plan)
    name = check_name(req.name)
    check_name_free(name, records=edges.records)
    host_ip = "0.0.0.0" if req.expose else "127.0.0.1"
    port, why = edges.ports.choose(name, req.port, host_ip)
    options = RenderOptions(backend="llamacpp", target="compose", port=port, expose=req.expose,
                            image=req.image)  # fmt: skip
    base = largest_result(plan)
    if req.dry_run:
        locate = _locate(req, edges)
        paths = [locate(e, r) for e, r in zip(req.entries, plan.results, strict=True)]
        bundle = render_several(plan, name=name, paths=paths, options=options)
        spec = with_limits(
            bundle.container_spec(),
            base,
            host_cpus=edges.host.cpu_count(),
            memory_limit_bytes=req.memory_limit_bytes or bundle.memory_limit_bytes,
        )
        out = {"plan": plan_json(plan, base.as_dict()), "files": bundle.files,
               "container": {"name": spec.name, "image": spec.image, "command": spec.command,
                             "mounts": [m.__dict__ for m in spec.mounts],
                             "memory_limit_bytes": spec.memory_limit_bytes}}  # fmt: skip
        return DryRun(out, bundle.files, native=False)
    edges.ports.check_free(host_ip, port)
    engine = edges.engine()
    engine.engine_available()
    check_name_free(name, engine, records=edges.records)
    edges.say(f"plan: {', '.join(plan.names)} on {req.profile.id}, at most {plan.max_loaded} "
              f"loaded ({fmt_bytes(plan.memory_request_bytes)} for the largest set)")  # fmt: skip
    edges.say(f"port: {port} ({why})")
    pulled = [_pull(req, edges, e, r) for e, r in zip(req.entries, plan.results, strict=True)]
    for e, p in zip(req.entries, pulled, strict=True):
        edges.say(f"weights: {e.name}: {p.path} (verified: {all(f.verified for f in p.files)})")
    preset = presets.write_preset(name, preset_text(plan))
    key_file: Path | None = None
    try:
        bundle = render_several(plan, name=name, paths=[p.path for p in pulled], options=options,
                                preset_source=str(preset))  # fmt: skip
        run_image, image_note = edges.choose_image(
            engine, bundle.image or "", req.profile.kind, req.image, "llamacpp"
        )
        edges.say(f"image: {image_note}")
        # Rendered again for the image that runs: its health probe is the one that image has.
        bundle = render_several(plan, name=name, paths=[p.path for p in pulled],
                                options=replace(options, image=run_image),
                                preset_source=str(preset))  # fmt: skip
        key_file = edges.keys.write_api_key(name, for_container=True) if req.expose else None
        spec = container_spec_for(bundle, key_file, attempt=edges.host.attempt_id())
        spec = with_limits(
            spec,
            base,
            host_cpus=edges.host.cpu_count(),
            memory_limit_bytes=req.memory_limit_bytes or bundle.memory_limit_bytes,
        )
        spec = replace(spec, pids_limit=bundle.pids_limit)  # fmt: skip
        edges.say(f"memory limit: {fmt_bytes(spec.memory_limit_bytes or 0)}")
        server = LlamaContainer(engine, bundle, spec, image_note,
                                plan_bytes=plan.memory_request_bytes)  # fmt: skip
        server.smoke_model = plan.names[0]
        server.served_model = plan.names[0]
        recorded = replace(base, model=",".join(plan.names))
        files = [f.path for p in pulled for f in p.files]
        check_name_free(name, records=edges.records)
        done = serve_and_prove(
            result=recorded, bundle=bundle, server=server, smoke=edges.llama_smoke,
            model_files=files, api_key_file=key_file, records=edges.records, keys=edges.keys,
            clock=edges.clock, on_progress=progress, timeout_s=req.timeout_s,
        )  # fmt: skip
    except BaseException:
        presets.discard(name)
        if key_file is not None:  # the key this deploy made (serve_and_prove may have already)
            edges.keys.discard(key_file)
        raise
    presets.release(name)
    return done


def locate_for_render(
    locate: Callable[[ModelRef, ModelFacts], WeightsLocation],
) -> Callable[[ModelEntry, PlanResult], WeightsLocation]:
    """`deployer render`'s weights locator, per entry."""
    return lambda e, r: locate(parse_model_ref(e.ref_text), r.chosen.facts)
