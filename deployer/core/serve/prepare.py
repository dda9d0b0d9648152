"""Prepare: plan -> weights location -> rendered bundle, the one sequence render and deploy share."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path, PurePosixPath
from typing import Protocol

from deployer.core.errors import InvalidRequest, QuantNotFound
from deployer.core.fit.plan import PlanRequest, PlanResult, make_plan
from deployer.core.hardware.profiles import Profile
from deployer.core.model.adapter import Adapter
from deployer.core.model.catalog import get_model, get_quant, load_catalog
from deployer.core.model.facts import (
    DECISION_ARCHS,
    ENCODER_DECODER_ARCHS,
    LLAMA_CPP_ARCHS,
    NO_LOADER_ARCHS,
    ModelFacts,
)
from deployer.core.model.ref import HF_PREFIX, DemoRef, HubRef, LocalRef, ModelRef
from deployer.core.model.resolve import HubReader, LocalModels, need_local, select_files
from deployer.core.model.weights import facts_from_catalog
from deployer.core.serve.llama_flags import PINNED_BUILD
from deployer.core.serve.render import RenderedBundle, default_name, render_plan

# Where `deployer pull --local-dir` puts weights that are not in the Hugging Face cache yet.
PULL_DIR = PurePosixPath("/models")


@dataclass(frozen=True)
class WeightsLocation:
    """The host path the weights have (or will have), and the pull that fetches them if absent."""

    path: Path
    pull_command: str | None = None


class WeightsCache(Protocol):
    """The local Hub cache, read by whoever owns its layout (deployer.adapters.download)."""

    def cached_file(self, repo_id: str, filename: str) -> Path | None:
        """The file in the cache, if it is there."""
        ...


def locate_weights(
    ref: ModelRef,
    facts: ModelFacts,
    *,
    cache: WeightsCache,
    hub: HubReader | None,
    local: LocalModels | None = None,
) -> WeightsLocation:
    """Real path for demo and local files; the Hub cache if pulled; else where pull puts it."""
    if isinstance(ref, DemoRef):
        return WeightsLocation(need_local(local).demo_path())
    if isinstance(ref, LocalRef):
        return WeightsLocation(need_local(local).resolved(ref.path))
    if isinstance(ref, HubRef):
        if hub is None:
            raise InvalidRequest("locating Hub weights needs a Hub reader")
        files = hub.list_gguf_files(ref.repo_id, ref.revision)
        repo_id, filename = ref.repo_id, select_files(files, facts.quant, ref.text)[0].name
        args = [f"{HF_PREFIX}{repo_id}:{facts.quant}"]
    else:
        entry = get_model(ref.text)
        _, qf = get_quant(entry, facts.quant)
        repo_id, filename = qf.repo, qf.file
        args = [entry.id, "--quant", facts.quant]
    cached = cache.cached_file(repo_id, filename)
    if cached is not None:
        return WeightsLocation(cached)
    pull = shlex.join(["deployer", "pull", *args, "--local-dir", str(PULL_DIR)])
    return WeightsLocation(Path(str(PULL_DIR / filename)), pull)


class Planner(Protocol):
    """Plans a model reference on a profile (deployer.cli.wiring.plan_for)."""

    def __call__(
        self,
        ref: ModelRef,
        prof: Profile,
        *,
        quant: str | None,
        ctx: int | None,
        parallel: int,
        kv_type: str,
        backend: str,
        load_mode: str | None,
        adapters: tuple[Adapter, ...] = (),
        prompt_cache_mib: int = 0,
    ) -> PlanResult: ...


@dataclass(frozen=True)
class PlanInputs:
    """The flags every command plans with."""

    quant: str | None = None
    ctx: int | None = None
    parallel: int = 1
    kv_type: str = "f16"
    backend: str = "llamacpp"
    load_mode: str | None = None  # llama-server --load-mode; None: the build's default (mmap)
    adapters: tuple[Adapter, ...] = ()  # LoRA adapters, read and checked (core/model/adapter.py)
    prompt_cache_mib: int = 0  # llama-server --cache-ram, held in the plan; 0: off

    def plan_request(self) -> PlanRequest:
        """The plan's view of these flags (the adapters are placed per model, not here)."""
        return PlanRequest(
            quant=self.quant, ctx=self.ctx, parallel=self.parallel, kv_type=self.kv_type.lower(),
            backend=self.backend, load_mode=self.load_mode,
            prompt_cache_mib=self.prompt_cache_mib,
        )  # fmt: skip


@dataclass(frozen=True)
class RenderOptions:
    """What render_plan needs besides the plan, the weights and the name."""

    backend: str = "llamacpp"
    target: str | None = None
    port: int | None = None
    expose: bool = False
    insecure: bool = False
    runtime_version: int = PINNED_BUILD
    image: str | None = None
    api_key_file: Path | None = None
    load_mode: str | None = None
    binary: str | None = None


@dataclass(frozen=True)
class Prepared:
    """A plan that fits, its weights and the bundle that runs it."""

    result: PlanResult
    weights: WeightsLocation
    bundle: RenderedBundle


def unservable_reason(result: PlanResult) -> str | None:
    """Why the model cannot be deployed, or None: encoders (BERT and its kin, EmbeddingGemma)
    need --embedding and diffusion models their own CLI (llama.cpp gives them no memory; a
    completion server aborts on them); encoder-decoders (T5) run a graph the plan does not
    size; decision models (CLEF) serve llama-server's /v1/systemone API, not completions; and
    an architecture the pinned llama.cpp does not know, or names without a loader (GPT-J),
    does not load at all."""
    arch = result.chosen.facts.arch
    if arch.architecture not in LLAMA_CPP_ARCHS:
        return (
            f"{result.model} is a '{arch.architecture}' model, an architecture llama.cpp "
            f"{PINNED_BUILD} does not know (its llama-server refuses to load it)"
        )
    if arch.architecture in NO_LOADER_ARCHS:
        return (
            f"{result.model} is a '{arch.architecture}' model, which llama.cpp "
            f"{PINNED_BUILD} names but has no loader for"
        )
    if arch.architecture in DECISION_ARCHS:
        return (
            f"{result.model} is a '{arch.architecture}' model (a decision model), which "
            "llama-server serves on /v1/systemone, not for chat completions"
        )
    if arch.no_memory:
        return (
            f"{result.model} is a '{arch.architecture}' model (embeddings or diffusion), which "
            "llama-server cannot serve for completions"
        )
    if arch.architecture in ENCODER_DECODER_ARCHS:
        return (
            f"{result.model} is a '{arch.architecture}' model (encoder-decoder), whose memory "
            "deployer does not size"
        )
    return None


def require_fit(result: PlanResult, ref: ModelRef) -> None:
    """Refuse to render or deploy a plan that does not fit, naming the command that explains,
    or a model llama-server cannot serve as a text-generation endpoint."""
    problem = unservable_reason(result)
    if problem is not None:
        raise InvalidRequest(problem, "deployer deploys decoder-only text-generation models.")
    if not result.fits:
        prof = result.profile.id
        raise InvalidRequest(
            f"{result.model} {result.chosen.facts.quant} does not fit {prof}",
            f"Run 'deployer plan {ref.text} --profile {prof}' for what would.",
        )


def plan_fitting(
    ref: ModelRef, profile: Profile, inputs: PlanInputs, planner: Planner, *, require: bool = True
) -> PlanResult:
    """The plan for `ref` on `profile`; InvalidRequest when it does not fit (unless not required).

    `require=False` is for callers that report a plan that does not fit rather than refuse it
    (fleet records a reason per host and still names the deployment).
    """
    # Field by field, not asdict: that would turn the adapters into dicts.
    result = planner(ref, profile, **{f.name: getattr(inputs, f.name) for f in fields(inputs)})
    if require:
        require_fit(result, ref)
    return result


def prepare(
    ref: ModelRef,
    result: PlanResult,
    *,
    name: str,
    locate: Callable[[ModelRef, ModelFacts], WeightsLocation],
    options: RenderOptions,
) -> Prepared:
    """The weights `result` runs on and the bundle that runs it there."""
    weights = locate(ref, result.chosen.facts)
    planned = result.request.load_mode
    if options.load_mode is not None and _mode(options.load_mode) != _mode(planned):
        raise InvalidRequest(
            f"rendering with --load-mode {options.load_mode} a plan made for {_mode(planned)}",
            "Plan and render with the same --load-mode.",
        )
    # Render loads the weights the way the plan assumed they are held.
    options = replace(options, load_mode=options.load_mode or planned)
    bundle = render_plan(
        result,
        model_path=weights.path,
        name=name,
        pull_command=weights.pull_command,
        **asdict(options),
    )
    return Prepared(result, weights, bundle)


def _mode(load_mode: str | None) -> str:
    # The build's default (no flag) and "auto" are mmap wherever deployer runs llama-server.
    return "mmap" if load_mode in (None, "auto") else load_mode


def deployment_name(result: PlanResult, name: str | None) -> str:
    """The name given, else the one the model suggests."""
    return name or default_name(result.model)


def best_catalog_model(prof: Profile, inputs: PlanInputs | None = None) -> str:
    """Without MODEL: the largest catalog model that fits fully at a usable speed, planned
    with the flags the deploy will use (a context, slots, a prompt cache shrink the choice).
    A model the request is invalid for (a context over its training, a quant it lacks) is
    skipped; a request no model takes is refused with the reason of the last one."""
    req = (inputs or PlanInputs()).plan_request()
    best: tuple[float, str] | None = None
    refused: InvalidRequest | QuantNotFound | None = None
    planned = 0
    for m in load_catalog().values():
        try:
            quants = [get_quant(m, req.quant)[0]] if req.quant else list(m.quants)
            facts = [facts_from_catalog(m, q) for q in quants]
            result = make_plan(m.id, facts, prof, req)
        except (InvalidRequest, QuantNotFound) as exc:
            refused = exc
            continue
        planned += 1
        if (
            result.fits
            and result.chosen.tokens_per_s >= 15
            and (best is None or m.params_b > best[0])
        ):
            best = (m.params_b, m.id)
    if not planned and refused is not None:
        raise refused  # the flags themselves (a kv type, a prompt cache for Ollama, ...)
    return best[1] if best else "demo"
