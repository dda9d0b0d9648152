"""The planner: the best quant, context and offload that truly fit a profile, and why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deployer.core.errors import InvalidRequest
from deployer.core.fit.memory import (
    GPU_RUNTIME_HOST_BYTES,
    KV_TYPES,
    LOAD_MODES,
    NO_FLASH_ATTENTION_ARCHS,
    WEIGHTS_HELD,
    FitSettings,
    MachineSpec,
    MemoryEstimate,
    estimate_memory,
    load_mode_of,
    safety_margin_bytes,
)
from deployer.core.hardware.profiles import Profile
from deployer.core.model.adapter import Adapter
from deployer.core.model.facts import (
    DECISION_ARCHS,
    ENCODER_DECODER_ARCHS,
    LLAMA_CPP_ARCHS,
    NO_LOADER_ARCHS,
    ModelFacts,
)
from deployer.core.model.quality import (
    NEGLIGIBLE_PPL_DELTA,
    UNQUANTIZED,
    ppl_delta,
    quality_note,
    quality_rank,
)
from deployer.core.units import GIB, fmt_bytes

DEFAULT_CTX = 8192
MIN_CTX = 512
# llama.cpp refuses more sequences than LLAMA_MAX_SEQ (src/llama-cparams.h; llama_context
# throws "n_seq_max must be <= 256" at startup), and llama-server reads -c as a 32-bit int.
MAX_PARALLEL = 256
MAX_CTX = (1 << 31) - 1
# Share of peak memory bandwidth a decode step achieves (llama.cpp on one stream).
DECODE_EFFICIENCY = {"gpu": 0.7, "apple": 0.65, "cpu": 0.5}
# Fixed time per layer per decode step (seconds), added to its memory/compute time; measured on
# an H200 (CUDA 13.0, driver 580, llama.cpp 11434, 14 real-shaped models of 9 architectures,
# benchmarks/results/fit_gpu.json): the median of (measured step - memory time) / layers, and
# the median growth per extra concurrent stream. In-sample for that GPU; leaving each
# architecture out of the fit, single-stream predictions stayed within 0.77-1.27x of measured.
# Apple and CPU: not measured, so none is assumed (their defaults were measured without it).
LAYER_LATENCY_S = {"gpu": 84e-6, "apple": 0.0, "cpu": 0.0}
EXTRA_STREAM_LATENCY = 0.3


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for; None means 'choose for me'."""

    quant: str | None = None
    ctx: int | None = None
    parallel: int = 1
    kv_type: str = "f16"
    backend: str = "llamacpp"
    flash_attention: bool | None = None
    load_mode: str | None = None  # llama-server --load-mode; None: the build's default (mmap)
    prompt_cache_mib: int = 0  # llama-server --cache-ram, counted in the host total; 0: off


# The largest prompt cache a plan takes (1 TiB): beyond any host a profile describes.
MAX_PROMPT_CACHE_MIB = 1 << 20


@dataclass
class Option:
    """One evaluated configuration: a quant at a context and offload."""

    facts: ModelFacts
    settings: FitSettings
    memory: MemoryEstimate
    full_offload: bool
    tokens_per_s: float

    @property
    def fits(self) -> bool:
        """Whether every device and the host are within budget."""
        return self.memory.fits


@dataclass
class Alternative:
    """A configuration not chosen, with the reason."""

    quant: str
    ctx: int
    n_gpu_layers: int
    fits: bool
    reason: str
    predicted_tokens_per_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "quant": self.quant,
            "ctx": self.ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "fits": self.fits,
            "reason": self.reason,
            "predicted_tokens_per_s": self.predicted_tokens_per_s,
        }


@dataclass
class License:
    """Licence facts shown with a plan."""

    id: str
    note: str
    restricts_use: bool
    gated: bool


@dataclass
class PlanResult:
    """The chosen configuration, its memory and speed, and every rejected alternative."""

    model: str
    profile: Profile
    request: PlanRequest
    chosen: Option
    alternatives: list[Alternative]
    license: License | None
    suggested_profiles: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    adapters: list[Adapter] = field(default_factory=list)  # LoRA adapters, counted in memory

    @property
    def fits(self) -> bool:
        """Whether the chosen configuration fits."""
        return self.chosen.fits

    def cost_per_million_tokens_usd(self) -> float | None:
        """Dollars per million output tokens at the predicted single-stream speed."""
        price = self.profile.price
        if price is None or self.chosen.tokens_per_s <= 0:
            return None
        return round(price.usd_per_hour / (self.chosen.tokens_per_s * 3600) * 1e6, 2)

    def as_dict(self) -> dict[str, Any]:
        """The `deployer plan --json` contract (docs/plan.md)."""
        c = self.chosen
        holders = [d for d in c.memory.devices if d.layers > 0]
        if c.memory.host.layers > 0 or not holders:
            holders.append(c.memory.host)
        memory = {
            k: sum(int(d.as_dict()[k]) for d in holders)
            for k in (
                "weights_bytes",
                "kv_cache_bytes",
                "compute_bytes",
                "output_bytes",
                "overhead_bytes",
                "prompt_cache_bytes",
                "checkpoint_bytes",
                "total_bytes",
                "budget_bytes",
                "logged_weights_bytes",
                "logged_buffers_bytes",
                "repack_bytes",
            )
        }
        lic = self.license
        return {
            "model": self.model,
            "profile": self.profile.id,
            "backend": self.request.backend,
            "quant": c.facts.quant,
            "file_bytes": c.facts.weights.file_bytes,
            "ctx": c.settings.ctx,
            "parallel": c.settings.parallel,
            "kv_type": c.settings.kv_type_k,
            "flash_attention": c.settings.flash_attention,
            "n_gpu_layers": c.memory.n_gpu_layers,
            "n_layers_total": c.facts.arch.n_layer + 1,
            "fits": self.fits,
            "memory": memory,
            "devices": [d.as_dict() for d in c.memory.devices] + [c.memory.host.as_dict()],
            "predicted_tokens_per_s": round(c.tokens_per_s, 1),
            "price_per_hour_usd": self.profile.price.usd_per_hour if self.profile.price else None,
            "cost_per_million_tokens_usd": self.cost_per_million_tokens_usd(),
            "license": (
                {
                    "id": lic.id,
                    "note": lic.note,
                    "restricts_use": lic.restricts_use,
                    "gated": lic.gated,
                }
                if lic
                else None
            ),
            "layout_exact": c.facts.weights.exact,
            "load_mode": c.settings.load_mode,
            "prompt_cache_mib": c.settings.prompt_cache_mib,
            "disk_read_ahead_kb": self.profile.disk_read_ahead_kb,
            "weights_held": c.memory.host.weights_held,
            "weights_summary": weights_summary(c),
            "cold_weights_bytes": c.memory.cold_weights_bytes,
            "alternatives": [a.as_dict() for a in self.alternatives],
            "suggested_profiles": self.suggested_profiles,
            "assumptions": self.assumptions,
            "warnings": self.warnings,
            "adapters": [a.as_dict() for a in self.adapters],
        }


def weights_summary(option: Option) -> str:
    """One line on how the host holds the weights, e.g. 'memory-mapped, 4.1 GiB resident; ...'."""
    host = option.memory.host
    text = WEIGHTS_HELD[option.settings.load_mode]
    if host.weights_bytes or not option.memory.cold_weights_bytes:
        text += f", {fmt_bytes(host.weights_bytes)} resident"
        if option.memory.devices:
            text += " on the host"
    if host.repack_bytes:
        if option.settings.load_mode == "mmap":
            text += (
                f"; {fmt_bytes(host.repack_bytes)} of repacked copies, their mapped source "
                "pages reclaimable"
            )
        elif option.settings.load_mode == "mmap+mlock":
            text += f"; {fmt_bytes(host.repack_bytes)} repacked and also locked in the mapping"
        else:
            text += f", {fmt_bytes(host.repack_bytes)} of it repacked for the CPU"
    w = option.facts.weights
    cold = option.memory.cold_weights_bytes
    if cold and (w.token_embd_bytes or w.input_bytes):
        where = " on the host" if option.memory.devices and not host.weights_bytes else ""
        # the input tables are always looked up; token_embd only when no output reads it
        tables = "token_embd" if cold > w.input_bytes else ""
        if w.input_bytes:
            tables = f"{tables} and the per-layer inputs" if tables else "the per-layer inputs"
        text += f"; {tables} ({fmt_bytes(cold)}) read in place{where}, a row a token"
    return text


def machine_spec(profile: Profile) -> MachineSpec:
    """Budgets the fit checks against, with our safety margins applied."""
    ram = profile.host_ram_bytes
    host_budget = ram - max(2 * GIB, ram // 10)
    if profile.kind == "apple":
        wired = profile.device_budget_bytes()
        return MachineSpec(
            kind="apple",
            device_count=1,
            device_budget_bytes=wired - max(GIB, wired // 10),
            device_overhead_bytes=0,
            host_budget_bytes=ram - wired,
            device_name="MTL",
            cpu_threads=profile.cpu_cores,
            read_ahead_bytes=profile.disk_read_ahead_kb * 1024,
        )
    if profile.gpu is not None:
        total = profile.gpu.memory_mib << 20
        return MachineSpec(
            kind="gpu",
            device_count=profile.gpu.count,
            device_budget_bytes=total - safety_margin_bytes(total),
            device_overhead_bytes=profile.gpu.reserve_mib << 20,
            host_budget_bytes=host_budget,
            device_name="ROCm" if profile.kind == "amd" else "CUDA",
            cpu_threads=profile.cpu_cores,
            read_ahead_bytes=profile.disk_read_ahead_kb * 1024,
        )
    return MachineSpec(
        kind="cpu",
        device_count=0,
        device_budget_bytes=0,
        device_overhead_bytes=0,
        host_budget_bytes=host_budget,
        cpu_threads=profile.cpu_cores,
        read_ahead_bytes=profile.disk_read_ahead_kb * 1024,
    )


def evaluate_option(facts: ModelFacts, s: FitSettings, profile: Profile, m: MachineSpec) -> Option:
    """Memory and single-stream speed of `facts` run with `s` on `profile`."""
    mem = estimate_memory(facts, s, m)
    full = m.kind == "cpu" or s.n_gpu_layers >= facts.arch.n_layer + 1
    option = Option(facts, s, mem, full, 0.0)
    option.tokens_per_s = single_stream_tokens_per_s(option, profile)
    return option


def single_stream_tokens_per_s(option: Option, profile: Profile) -> float:
    """One stream's decode speed with the cache half full, at the default efficiencies: the
    throughput model's (throughput.py) one-slot step."""
    from deployer.core.fit.throughput import efficiency_for, predict_load

    half = max(option.settings.ctx // 2, 256)
    load = predict_load(option, profile, slots=1, prompt_tokens=half, output_tokens=1,
                        efficiency=efficiency_for(profile, None))  # fmt: skip
    return load.per_stream_tokens_per_s


def _settings(req: PlanRequest, ctx: int, fa: bool, ngl: int) -> FitSettings:
    return FitSettings(
        ctx=ctx,
        parallel=req.parallel,
        kv_type_k=req.kv_type,
        kv_type_v=req.kv_type,
        flash_attention=fa,
        n_gpu_layers=ngl,
        ctx_is_per_slot=req.backend == "ollama",
        load_mode=load_mode_of(req.load_mode),
        prompt_cache_mib=req.prompt_cache_mib,
    )


def _best_partial(
    facts: ModelFacts,
    req: PlanRequest,
    ctx: int,
    fa: bool,
    profile: Profile,
    m: MachineSpec,
    gpu_only: bool = False,
) -> Option | None:
    """Most GPU layers that fit (device memory grows with layers, so bisect)."""
    lo, hi = 0, facts.arch.n_layer  # n_layer + 1 is full offload, already rejected
    best: Option | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        opt = evaluate_option(facts, _settings(req, ctx, fa, mid), profile, m)
        if all(d.fits for d in opt.memory.devices) if gpu_only else opt.fits:
            best, lo = opt, mid + 1
        else:
            hi = mid - 1
    return best if best is not None and best.memory.n_gpu_layers > 0 else None


def _max_ctx(
    facts: ModelFacts,
    req: PlanRequest,
    ctx: int,
    fa: bool,
    profile: Profile,
    m: MachineSpec,
    ngl: int,
) -> int | None:
    """Largest context (multiple of 256, >= MIN_CTX) below `ctx` that fits."""
    lo, hi, best = MIN_CTX // 256, ctx // 256 - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if evaluate_option(facts, _settings(req, mid * 256, fa, ngl), profile, m).fits:
            best, lo = mid * 256, mid + 1
        else:
            hi = mid - 1
    return best


def _prefer_smaller_when_negligible(
    chosen: Option | None, options: list[Option], skip: Callable[[Option], str | None]
) -> Option | None:
    """The smallest fitting file whose measured loss is within noise of the best one's."""
    if chosen is None:
        return None
    best = ppl_delta(chosen.facts.quant)
    if best is None:
        return chosen
    pick = chosen
    for o in options:
        delta = ppl_delta(o.facts.quant)
        if (
            o.fits
            and skip(o) is None
            and delta is not None
            and delta - best < NEGLIGIBLE_PPL_DELTA
            and o.facts.weights.file_bytes < pick.facts.weights.file_bytes
        ):
            pick = o
    return pick


def _overflow_reason(opt: Option) -> str:
    worst = max(
        [*opt.memory.devices, opt.memory.host],
        key=lambda d: d.total_bytes - d.budget_bytes,
    )
    return (
        f"needs {fmt_bytes(worst.total_bytes)} on {worst.name}, "
        f"budget {fmt_bytes(worst.budget_bytes)}"
    )


def _check_prompt_cache(req: PlanRequest) -> None:
    """A prompt cache is llama-server's (--cache-ram), sized in whole MiB."""
    n = req.prompt_cache_mib
    if not 0 <= n <= MAX_PROMPT_CACHE_MIB:
        raise InvalidRequest(
            f"a prompt cache of {n} MiB is out of range",
            f"Use 0 (off) to {MAX_PROMPT_CACHE_MIB} MiB.",
        )
    if n and req.backend == "ollama":
        raise InvalidRequest(
            "--prompt-cache sizes llama-server's prompt cache; Ollama has none to size",
            "Drop --prompt-cache, or use --backend llamacpp.",
        )


def _check_slots(req: PlanRequest, ctx: int, ctx_train: int, model: str) -> None:
    """Refuse a context or slot count llama.cpp would refuse, or that leaves a slot no room."""
    if not 1 <= req.parallel <= MAX_PARALLEL:
        raise InvalidRequest(
            f"--parallel {req.parallel} is outside llama.cpp's range of 1 to {MAX_PARALLEL} slots",
            f"Use --parallel 1 to {MAX_PARALLEL}.",
        )
    if ctx > ctx_train:
        raise InvalidRequest(
            f"context {ctx} is above {model}'s trained context of {ctx_train}",
            f"Use --ctx {min(ctx_train, MAX_CTX)} or less.",
        )
    if ctx < MIN_CTX:
        raise InvalidRequest(f"context {ctx} is below the minimum of {MIN_CTX}")
    per_slot = req.backend == "ollama"  # Ollama's num_ctx is per slot, allocated x slots
    total = ctx * req.parallel if per_slot else ctx
    if total > MAX_CTX:
        raise InvalidRequest(
            f"a context of {total} cells is above llama-server's limit of {MAX_CTX}",
            "Use a smaller --ctx" + (" or --parallel." if per_slot else "."),
        )
    cells = FitSettings(ctx=ctx, parallel=req.parallel, ctx_is_per_slot=per_slot).cells_per_stream
    if cells < MIN_CTX:
        # llama.cpp splits -c evenly over the slots (n_ctx_seq): each must hold a real prompt.
        more_ctx = MIN_CTX * req.parallel
        hint = f"Use --ctx {more_ctx} or more, or " if more_ctx <= ctx_train else "Use "
        raise InvalidRequest(
            f"context {ctx} shared by {req.parallel} slots leaves {cells} cells a slot, "
            f"below the minimum of {MIN_CTX}",
            f"{hint}--parallel {max(1, ctx // MIN_CTX)} or fewer.",
        )


def make_plan(
    model: str,
    candidates: list[ModelFacts],
    profile: Profile,
    req: PlanRequest,
    *,
    license: License | None = None,
    other_profiles: list[Profile] | None = None,
) -> PlanResult:
    """Choose the best candidate quant that fits `profile` and explain every alternative."""
    if not candidates:
        raise InvalidRequest(f"model '{model}' has no GGUF file to plan with")
    if req.kv_type not in KV_TYPES:
        raise InvalidRequest(
            f"unknown KV type '{req.kv_type}'", f"Use one of: {', '.join(KV_TYPES)}."
        )
    if req.load_mode is not None and req.load_mode not in ("auto", *LOAD_MODES):
        raise InvalidRequest(
            f"unknown load mode '{req.load_mode}'", f"Use one of: {', '.join(LOAD_MODES)}."
        )
    _check_prompt_cache(req)
    arch = candidates[0].arch
    ctx = req.ctx if req.ctx is not None else min(DEFAULT_CTX, arch.ctx_train)
    _check_slots(req, ctx, arch.ctx_train, model)
    fa = profile.flash_attention if req.flash_attention is None else req.flash_attention
    forced_off = arch.architecture in NO_FLASH_ATTENTION_ARCHS
    fa = fa and not forced_off  # llama.cpp turns it off for these whatever -fa says
    if req.kv_type not in ("f16", "bf16", "f32") and not fa:
        raise InvalidRequest(
            f"a {req.kv_type} V cache needs flash attention, which is off here"
            + (f" (llama.cpp runs {arch.architecture} without it)" if forced_off else ""),
            "Use --kv-type f16.",
        )
    m = machine_spec(profile)
    full_ngl = arch.n_layer + 1 if m.kind != "cpu" else 0
    ordered = sorted(candidates, key=lambda f: (quality_rank(f.quant), f.weights.file_bytes))
    options = [evaluate_option(f, _settings(req, ctx, fa, full_ngl), profile, m) for f in ordered]
    has_q8 = any(o.facts.quant.upper() == "Q8_0" for o in options)
    native_mxfp4 = any(o.facts.quant.upper() == "MXFP4" for o in options)

    wanted = req.quant.upper() if req.quant else None

    def skip_reason(o: Option) -> str | None:
        q = o.facts.quant.upper()
        if wanted is not None:
            return None if q == wanted else f"not requested (--quant {req.quant})"
        if native_mxfp4 and (q in UNQUANTIZED or q == "Q8_0"):
            return (
                "the model was released in MXFP4: a larger re-quantization adds bytes, not quality"
            )
        if q in UNQUANTIZED and m.kind == "cpu":
            return "unquantized on a CPU: twice the bytes per token of Q8_0 for no measurable gain"
        if q in UNQUANTIZED and has_q8:
            return "Q8_0 is within noise of it (+0.0026 perplexity) at half the memory"
        return None

    chosen: Option | None = None
    for o in options:
        if chosen is None and skip_reason(o) is None and o.fits:
            chosen = o
    chosen = _prefer_smaller_when_negligible(chosen, options, skip_reason)
    alternatives: list[Alternative] = []
    for o in options:
        if o is chosen:
            continue
        skip = skip_reason(o)
        if not o.fits:
            reason = _overflow_reason(o)
        elif chosen is None:
            reason = f"fits: a smaller quant that works ({quality_note(o.facts.quant)})"
        elif skip is not None:
            reason = f"fits, but {skip}"
        elif quality_rank(o.facts.quant) < quality_rank(chosen.facts.quant):
            reason = (
                f"fits, but {chosen.facts.quant} is within noise of it "
                f"({quality_note(o.facts.quant)}) and smaller, so faster"
            )
        elif quality_rank(o.facts.quant) > quality_rank(chosen.facts.quant):
            reason = (
                f"fits, lower quality than {chosen.facts.quant} ({quality_note(o.facts.quant)})"
            )
        else:
            reason = "fits, but ranked below the chosen quant"
        alternatives.append(
            Alternative(
                o.facts.quant, ctx, o.memory.n_gpu_layers, o.fits, reason, round(o.tokens_per_s, 1)
            )
        )

    suggested: list[str] = []
    assumptions = [
        f"decode speed = {int(DECODE_EFFICIENCY['gpu'] * 100)}% (GPU), "
        f"{int(DECODE_EFFICIENCY['apple'] * 100)}% (Apple), {int(DECODE_EFFICIENCY['cpu'] * 100)}% "
        "(CPU) of memory bandwidth / bytes read per token; one stream, cache half full; on a "
        f"GPU plus {LAYER_LATENCY_S['gpu'] * 1e3:.3f} ms per layer per token (kernel launches, "
        "measured on an H200)",
        "multi-GPU layer split runs the GPUs one after another: no speed-up, only more memory",
        "safety margin per device: max(1 GiB, 5%) (Apple: max(1 GiB, 10%) of the wired limit); "
        "host keeps max(2 GiB, 10%) of RAM free",
    ]
    if not candidates[0].weights.exact:
        assumptions.append(
            "tensor split estimated from the catalog's file size; exact once the GGUF header is read"
        )
    if m.kind == "gpu":
        assumptions.append(
            f"host: {fmt_bytes(GPU_RUNTIME_HOST_BYTES)} for the GPU runtime (CUDA/ROCm libraries, "
            "the driver's allocations), an upper bound: four CUDA servers measured under a memory "
            "limit needed 153-231 MiB for it"
        )

    if chosen is None:
        # Nothing fits fully: report the preferred quant (requested, else the default-ish one)
        # and offer what would work.
        preferred = (
            next((o for o in options if wanted and o.facts.quant.upper() == wanted), None)
            or next((o for o in options if o.facts.quant.upper() == "Q4_K_M"), None)
            or options[-1]
        )
        chosen = preferred
        alternatives = [a for a in alternatives if a.quant != preferred.facts.quant]
        if m.kind != "cpu":
            partial = _best_partial(preferred.facts, req, ctx, fa, profile, m)
            if partial is not None:
                alternatives.insert(
                    0,
                    Alternative(
                        preferred.facts.quant,
                        ctx,
                        partial.memory.n_gpu_layers,
                        True,
                        f"partial offload: {partial.memory.n_gpu_layers} of {arch.n_layer + 1} layers "
                        f"on the GPU, the rest on the CPU (~{partial.tokens_per_s:.1f} tokens/s)",
                        round(partial.tokens_per_s, 1),
                    ),
                )
            else:
                gpu_full = _best_partial(preferred.facts, req, ctx, fa, profile, m, gpu_only=True)
                if gpu_full is not None:
                    alternatives.insert(
                        0,
                        Alternative(
                            preferred.facts.quant,
                            ctx,
                            gpu_full.memory.n_gpu_layers,
                            False,
                            f"partial offload ({gpu_full.memory.n_gpu_layers} layers on the GPU) "
                            f"does not fit either: {_overflow_reason(gpu_full)}",
                            round(gpu_full.tokens_per_s, 1),
                        ),
                    )
        best_ctx = _max_ctx(preferred.facts, req, ctx, fa, profile, m, full_ngl)
        if best_ctx is not None:
            alternatives.insert(
                0,
                Alternative(
                    preferred.facts.quant,
                    best_ctx,
                    full_ngl,
                    True,
                    f"largest context that fits fully: {best_ctx}",
                ),
            )
        for p in _same_kind_first(other_profiles or [], profile):
            if p.id == profile.id:
                continue
            mp = machine_spec(p)
            ngl = arch.n_layer + 1 if mp.kind != "cpu" else 0
            if estimate_memory(preferred.facts, _settings(req, ctx, fa, ngl), mp).fits:
                suggested.append(p.id)
        suggested.sort(
            key=lambda pid: _profile_size(next(p for p in other_profiles or [] if p.id == pid))
        )
        suggested = suggested[:5]
        if suggested:
            alternatives.append(
                Alternative(
                    preferred.facts.quant,
                    ctx,
                    -1,
                    True,
                    "a bigger machine: " + ", ".join(suggested[:3]),
                )
            )
    warnings: list[str] = []
    if arch.architecture not in LLAMA_CPP_ARCHS or arch.architecture in NO_LOADER_ARCHS:
        warnings.append(
            f"{arch.architecture}: the pinned llama.cpp has no loader for this architecture; "
            "this plan sizes it as a generic transformer, and deployer does not serve it"
        )
    if arch.architecture in ENCODER_DECODER_ARCHS:
        warnings.append(
            f"{arch.architecture} is an encoder-decoder model: this plan does not size its "
            "encoder's graph (its compute buffer is larger), and deployer does not serve it"
        )
    if arch.architecture in DECISION_ARCHS:
        warnings.append(
            f"{arch.architecture} is a decision model: llama-server serves it on /v1/systemone "
            "with its own template, not for chat completions, and deployer does not serve it"
        )
    delta = ppl_delta(chosen.facts.quant)
    if chosen.fits and delta is not None and delta > HEAVY_LOSS_PPL_DELTA:
        better = _profiles_fitting_quality(options, req, ctx, fa, other_profiles or [], profile)
        warnings.append(
            f"{chosen.facts.quant} loses a lot of quality ({quality_note(chosen.facts.quant)})"
            + (f"; Q4_K_M or better fits on: {', '.join(better[:3])}" if better else "")
        )
        suggested = better[:5]
    return PlanResult(
        model=model,
        profile=profile,
        request=req,
        chosen=chosen,
        alternatives=alternatives,
        license=license,
        suggested_profiles=suggested,
        assumptions=assumptions,
        warnings=warnings,
    )


# Worse than Q3_K_M: users should hear that a bigger machine buys real quality.
HEAVY_LOSS_PPL_DELTA = 0.6


def _profiles_fitting_quality(
    options: list[Option],
    req: PlanRequest,
    ctx: int,
    fa: bool,
    profiles: list[Profile],
    here: Profile,
) -> list[str]:
    """Profiles (cheapest first) where a quant at least as good as Q4_K_M fits fully."""
    good = [
        o for o in options if (d := ppl_delta(o.facts.quant)) is not None and d <= PPL_DELTA_Q4_K_M
    ]
    if not good:
        return []
    smallest = min(good, key=lambda o: o.facts.weights.file_bytes)
    found = []
    for p in _same_kind_first(profiles, here):
        if p.id == here.id:
            continue
        mp = machine_spec(p)
        ngl = smallest.facts.arch.n_layer + 1 if mp.kind != "cpu" else 0
        if estimate_memory(smallest.facts, _settings(req, ctx, fa, ngl), mp).fits:
            found.append(p)
    return [p.id for p in sorted(found, key=_profile_size)]


PPL_DELTA_Q4_K_M = 0.1754


def _same_kind_first(profiles: list[Profile], here: Profile) -> list[Profile]:
    """Profiles of the same accelerator kind as `here`, or all when none of that kind."""
    same = [p for p in profiles if p.kind == here.kind and p.id != here.id]
    return same or profiles


def _profile_size(p: Profile) -> tuple[float, int]:
    """Order profiles by price where known, then by accelerator memory."""
    price = p.price.usd_per_hour if p.price else float("inf")
    mem = p.device_budget_bytes() * max(p.device_count, 1) or p.host_ram_bytes
    return (price, mem)
