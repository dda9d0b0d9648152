"""Throughput under load: aggregate decode speed for N slots, prefill speed, time to first token.

CONTRACT (implemented by the plan-load work; bench calls it): signatures below are fixed.

The model, for any architecture and machine (docs/plan.md "Throughput under load"):
- A decode step with B streams busy takes, on each device that holds layers (the host for its
  layers in a partial offload), its memory time and its compute time: on a GPU (or Apple GPU)
  the longer of the two, as thousands of threads in flight hide one behind the other; on CPU
  cores, which both fetch and compute, their sum. Devices of a layer split run one after
  another, so their times add. Memory: the weights read once per step
  (MoE: the expected union of the experts B tokens route to, 1 - (1 - k/E)^B of the routed
  experts' tensors, as the file's tensor table sizes them, plus every dense weight: attention,
  shared experts, dense leading blocks) and each stream's KV cache at its average position (prompt +
  output / 2), over bandwidth x memory efficiency. Compute: B x (2 x active parameters + the
  attention FLOPs at that position), over peak FLOPS x compute efficiency.
- On a GPU each layer also costs a fixed time per step, whatever its bytes: llama.cpp runs a
  dozen or more small kernels per layer, and at decode's tiny batches their launch and
  synchronisation, not bandwidth, set the pace (LAYER_LATENCY_S). Each stream beyond the first
  adds a share of it (EXTRA_STREAM_LATENCY). Without it a 1B model on an H200 was predicted at
  4,157 tokens/s and decoded at 615 (benchmarks/fit_gpu.py, docs/bench.md "On a GPU").
- Prefill is compute-bound: FLOPs per prompt token are 2 x the active block parameters plus
  attention at half the prompt; the output layer runs for the last position only (the one whose
  logits are sampled), which the first decode step already counts.
- Prefills take the whole machine, so they queue behind each other and stall the streams that
  decode: over one request's life, each of the B streams prefills once. End to end is then
  B x prompt / prefill speed + output x one step at B, and requests/s = B / end to end (machine
  time counted once, however arrivals fall).
- Time to first token: a request arriving alone, its prompt at prefill speed plus one step at B
  (`ttft_s`); B requests arriving together (a burst, or a closed loop of equal requests, which
  stays in step) wait for all B prompts (`ttft_burst_s`).
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.core.fit.calibration import Calibration
from deployer.core.fit.memory import FitSettings, kv_bytes
from deployer.core.fit.plan import (
    DECODE_EFFICIENCY,
    EXTRA_STREAM_LATENCY,
    LAYER_LATENCY_S,
    Option,
)
from deployer.core.hardware.profiles import Profile
from deployer.core.model.facts import ModelArch, ModelFacts
from deployer.core.model.weights import base_bpw

# Share of peak FLOPS llama.cpp's prefill reaches (docs/plan.md says why these numbers):
# NVIDIA/AMD against the dense FP16 tensor peak, Apple against the GPU's FP16 (= FP32) peak,
# CPUs against the FP32 FMA peak.
PREFILL_EFFICIENCY = {"gpu": 0.35, "apple": 0.6, "cpu": 0.5}
DEFAULT_SOURCE = "default assumption"


@dataclass(frozen=True)
class Efficiency:
    """Shares of the peak a machine reaches: memory bandwidth in decode, FLOPS in prefill."""

    memory: float
    compute: float
    source: str  # "default assumption" or Calibration.note()


@dataclass(frozen=True)
class LoadPrediction:
    """What one server is predicted to do with `slots` streams busy at once."""

    slots: int
    aggregate_tokens_per_s: float  # output tokens/s summed over the streams
    per_stream_tokens_per_s: float  # output tokens/s one stream sees
    prefill_tokens_per_s: float  # prompt tokens/s processed
    ttft_s: float  # time to first token for one request of `prompt_tokens`
    e2e_s: float  # end-to-end time of one request (ttft + the other output tokens)
    requests_per_s: float  # slots / e2e_s
    compute_bound: bool  # the decode step is limited by FLOPS, not memory bandwidth
    efficiency: Efficiency
    ttft_burst_s: float = 0.0  # time to first token when `slots` requests arrive together
    step_memory_s: float = 0.0  # one decode step's time reading memory (all devices)
    step_compute_s: float = 0.0  # one decode step's time computing (all devices)
    step_latency_s: float = 0.0  # one decode step's fixed per-layer time (GPU kernel launches)


def device_kind(profile: Profile) -> str:
    """The efficiency class of the profile's main device: gpu, apple or cpu."""
    if profile.kind == "apple":
        return "apple"
    return "gpu" if profile.gpu is not None else "cpu"


# The throughput model's version per device kind: bumped when a change makes efficiencies
# fitted before it mean something else. GPU 2: the per-layer kernel time (LAYER_LATENCY_S), which
# a GPU calibration fitted before it had folded into its memory efficiency.
MODEL_VERSION: dict[str, int] = {"cpu": 1, "apple": 1, "gpu": 2}


def efficiency_for(profile: Profile, calibration: Calibration | None) -> Efficiency:
    """The default efficiencies for the profile's kind, or the calibrated ones (a calibration
    fitted against an older throughput model for this kind is not used, and the source says so)."""
    kind = device_kind(profile)
    if calibration is not None and calibration.model_version == MODEL_VERSION[kind]:
        return Efficiency(
            memory=calibration.memory_efficiency,
            compute=calibration.compute_efficiency,
            source=calibration.note(),
        )
    source = DEFAULT_SOURCE
    if calibration is not None:
        source += (
            f" (the calibration of {calibration.measured_on} was fitted to an older throughput "
            "model: run `deployer bench` again)"
        )
    return Efficiency(DECODE_EFFICIENCY[kind], PREFILL_EFFICIENCY[kind], source)


def expert_share(arch: ModelArch) -> float:
    """Share of a block's weights that are routed experts (0 for a dense model), from the
    architecture alone: for a layout that does not know its experts' bytes (a catalog
    estimate). Every block is taken as an MoE block of plain attention."""
    if not arch.n_expert or not arch.n_expert_used:
        return 0.0
    n_q = arch.n_head * arch.head_dim_k
    attn = arch.n_embd * (2 * n_q + 2 * max(arch.n_head_kv) * arch.head_dim_k)
    experts = 3 * arch.n_embd * arch.n_ff * arch.n_expert
    return experts / (attn + experts) if attn + experts else 0.0


def experts_touched(arch: ModelArch, tokens: int) -> float:
    """Expected share of a layer's experts that `tokens` independently routed tokens touch."""
    if not arch.n_expert or not arch.n_expert_used:
        return 1.0
    return 1.0 - (1.0 - arch.n_expert_used / arch.n_expert) ** tokens


def attention_flops(arch: ModelArch, layers: list[int], position: float) -> float:
    """FLOPs of one token's attention (QK and AV) at `position` over `layers`."""
    total = 0.0
    for i in layers:
        if not arch.n_head_kv[i]:
            continue
        cells = min(position, arch.sliding_window) if arch.is_swa(i) else position
        total += 2.0 * arch.n_head * cells * sum(arch.head_dims(i))
    return total


@dataclass(frozen=True)
class _Part:
    """One device's share of a step: its layers, weights and speeds."""

    blocks: list[int]
    block_bytes: int  # the blocks' weights
    expert_bytes: int  # of those, routed experts': a token reads its experts' share
    other_bytes: int  # weights read by every token besides the blocks (the output layer)
    bandwidth: float  # bytes/s, efficiency applied
    flops: float  # FLOP/s, efficiency applied
    overlaps: bool  # memory and compute time overlap (a GPU) rather than add (CPU cores)
    layer_latency_s: float = 0.0  # fixed time per layer per step (LAYER_LATENCY_S)


def _expert_bytes(facts: ModelFacts, blocks: list[int]) -> int:
    """Routed experts' bytes in `blocks`: read from the tensor table, or (an estimated layout)
    the architecture's expert share of the blocks."""
    w = facts.weights
    if w.expert_bytes is not None:
        return sum(w.expert_bytes[i] for i in blocks)
    return round(sum(w.block_bytes[i] for i in blocks) * expert_share(facts.arch))


def _parts(option: Option, profile: Profile, eff: Efficiency) -> list[_Part]:
    """The devices (then the host, for its layers) one token passes through, in order."""
    w, mem = option.facts.weights, option.memory
    parts: list[_Part] = []
    main_is_cpu = device_kind(profile) == "cpu"
    for dev in mem.devices:
        if dev.layers:
            blocks = sum(w.block_bytes[i] for i in dev.blocks)
            parts.append(
                _Part(
                    dev.blocks,
                    blocks,
                    _expert_bytes(option.facts, dev.blocks),
                    dev.weights_bytes - blocks,
                    profile.device_bandwidth_gbps() * 1e9 * eff.memory,
                    profile.device_peak_flops()[0] * eff.compute,
                    overlaps=True,
                    layer_latency_s=LAYER_LATENCY_S[device_kind(profile)],
                )
            )
    if mem.host.layers or not parts:
        blocks = sum(w.block_bytes[i] for i in mem.host.blocks)
        other = w.output_bytes if mem.n_gpu_layers == 0 else 0
        # The host of a GPU or Apple machine runs at the CPU's default efficiencies: a
        # calibration measures the device that holds the model.
        m_eff = eff.memory if main_is_cpu else DECODE_EFFICIENCY["cpu"]
        c_eff = eff.compute if main_is_cpu else PREFILL_EFFICIENCY["cpu"]
        parts.append(
            _Part(
                mem.host.blocks,
                blocks,
                _expert_bytes(option.facts, mem.host.blocks),
                other,
                profile.cpu_bandwidth_gbps * 1e9 * m_eff,
                profile.cpu_peak_flops()[0] * c_eff,
                overlaps=False,
            )
        )
    return parts


def _params(facts: ModelFacts, n_bytes: float) -> float:
    """Parameters in `n_bytes` of this quant's weights."""
    return n_bytes * 8 / base_bpw(facts.quant)


def _output_params(arch: ModelArch, part: _Part) -> float:
    """Parameters of the output layer, where this part holds it: vocabulary x embedding width
    (its bytes would mislead: llama-quantize keeps it at Q6_K or above)."""
    return float(arch.n_vocab * arch.n_embd) if part.other_bytes else 0.0


def _kv_read(option: Option, blocks: list[int], position: float) -> int:
    """KV bytes one stream reads per step at `position`."""
    s = option.settings
    at = FitSettings(ctx=max(int(position), 1), kv_type_k=s.kv_type_k, kv_type_v=s.kv_type_v)
    return kv_bytes(option.facts.arch, blocks, at)


@dataclass(frozen=True)
class _Step:
    """One decode step with every stream busy: its time, and how it divides."""

    seconds: float
    memory_s: float
    compute_s: float
    latency_s: float = 0.0

    @property
    def compute_bound(self) -> bool:
        return self.compute_s > self.memory_s


def _active_bytes(p: _Part, touched: float) -> float:
    """The part's block bytes a token computes with: every dense weight, its experts' share."""
    return p.block_bytes - p.expert_bytes * (1.0 - touched)


def _step(option: Option, parts: list[_Part], slots: int, position: float) -> _Step:
    """One decode step with `slots` streams at `position`."""
    arch = option.facts.arch
    touched, one = experts_touched(arch, slots), experts_touched(arch, 1)
    mem_s = comp_s = lat_s = total = 0.0
    for p in parts:
        read = _active_bytes(p, touched) + p.other_bytes
        read += slots * _kv_read(option, p.blocks, position)
        flops_per_token = 2.0 * (
            _params(option.facts, _active_bytes(p, one)) + _output_params(arch, p)
        )
        flops_per_token += attention_flops(arch, p.blocks, position)
        m, c = read / p.bandwidth, slots * flops_per_token / p.flops
        lat = len(p.blocks) * p.layer_latency_s * (1.0 + EXTRA_STREAM_LATENCY * (slots - 1))
        mem_s, comp_s, lat_s = mem_s + m, comp_s + c, lat_s + lat
        total += (max(m, c) if p.overlaps else m + c) + lat
    return _Step(total, mem_s, comp_s, lat_s)


def predict_load(
    option: Option,
    profile: Profile,
    *,
    slots: int,
    prompt_tokens: int,
    output_tokens: int,
    efficiency: Efficiency,
) -> LoadPrediction:
    """Predicted throughput and latency of `option` (a plan's chosen configuration) with
    `slots` requests of `prompt_tokens` in and `output_tokens` out running at once."""
    if slots < 1 or prompt_tokens < 0 or output_tokens < 1:
        raise ValueError("slots and output_tokens must be at least 1, prompt_tokens at least 0")
    if efficiency.memory <= 0 or efficiency.compute <= 0:
        raise ValueError("efficiencies must be positive")
    arch = option.facts.arch
    parts = _parts(option, profile, efficiency)
    step = _step(option, parts, slots, prompt_tokens + output_tokens / 2)
    one = experts_touched(arch, 1)
    # Only the prompt's last position needs logits (llama-server asks for no others), so the
    # output layer is not part of a prompt token's cost: the decode step below pays it once.
    prefill_s_per_token = sum(
        (
            2.0 * _params(option.facts, _active_bytes(p, one))
            + attention_flops(arch, p.blocks, prompt_tokens / 2)
        )
        / p.flops
        for p in parts
    )
    prefill = 1.0 / prefill_s_per_token
    prompt_s = prompt_tokens / prefill
    # Every stream's prefill in one request's life, then its output (the first token's step
    # comes with the TTFT): machine time, counted once.
    e2e = slots * prompt_s + output_tokens * step.seconds
    return LoadPrediction(
        slots=slots,
        aggregate_tokens_per_s=slots / step.seconds,
        per_stream_tokens_per_s=1.0 / step.seconds,
        prefill_tokens_per_s=prefill,
        ttft_s=prompt_s + step.seconds,
        e2e_s=e2e,
        requests_per_s=slots / e2e,
        compute_bound=step.compute_bound,
        efficiency=efficiency,
        ttft_burst_s=slots * prompt_s + step.seconds,
        step_memory_s=step.memory_s,
        step_compute_s=step.compute_s,
        step_latency_s=step.latency_s,
    )
