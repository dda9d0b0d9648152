"""Detect this machine's hardware from recorded tool outputs and match it to a profile.

Pure: the adapter `deployer.adapters.system_probe` runs the tools and fills a `ProbeResult`;
everything here only parses text, so every branch is tested with recorded outputs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from deployer.core.datafiles import validate_data
from deployer.core.hardware.profiles import (
    DEFAULT_APPLE_FLOP_PER_BYTE,
    DEFAULT_CPU_GHZ,
    DEFAULT_GPU_FLOP_PER_BYTE,
    MAX_READ_AHEAD_KB,
    MIN_READ_AHEAD_KB,
    AcceleratorKind,
    Profile,
    RuntimeSpec,
    derived_cpu_peak_gflops,
)
from deployer.core.units import GIB, MIB

MatchKind = Literal["exact", "closest", "ad-hoc"]

# Tolerances: drivers report a few MiB differently across versions; hosts vary more.
_GPU_MEM_EXACT = 0.02
_GPU_MEM_CLOSE = 0.10
_HOST_RAM_TOL = 0.10
_CPU_RAM_TOL = 0.05

_VENDOR_WORDS = {
    "nvidia",
    "geforce",
    "tesla",
    "quadro",
    "rtx",
    "amd",
    "instinct",
    "radeon",
    "apple",
}
_X86_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
_ARM_FLAGS = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve"}

# Assumptions for ad-hoc profiles (documented in docs/detect.md).
_GPU_RESERVE_MIB = 512
_AMD_MIN_VRAM = 2 * GIB
_GPU_BANDWIDTH_FALLBACK_GBPS = 300.0
_CPU_GBPS_PER_CHANNEL = 10.0
# The lowest bandwidth Apple lists for each chip, so speed is not overstated.
_APPLE_BANDWIDTH_GBPS = {
    ("m1", ""): 68, ("m1", "pro"): 200, ("m1", "max"): 400, ("m1", "ultra"): 800,
    ("m2", ""): 100, ("m2", "pro"): 200, ("m2", "max"): 400, ("m2", "ultra"): 800,
    ("m3", ""): 100, ("m3", "pro"): 150, ("m3", "max"): 300, ("m3", "ultra"): 819,
    ("m4", ""): 120, ("m4", "pro"): 273, ("m4", "max"): 410,
}  # fmt: skip


@dataclass(frozen=True)
class ProbeResult:
    """Raw outputs of the probing tools; None where a tool is missing or failed."""

    os_name: str
    arch: str
    nvidia_csv: str | None = None
    nvidia_source: str = ""
    rocm_json: str | None = None
    amd_sysfs_vram: tuple[str, ...] = ()
    sysctl: str | None = None
    system_profiler_json: str | None = None
    cpuinfo: str | None = None
    cpu_cores: int | None = None
    cpu_threads: int | None = None
    ram_bytes: int | None = None
    read_ahead_kb: tuple[str, ...] = ()  # /sys/block/<disk>/queue/read_ahead_kb, each disk
    errors: tuple[str, ...] = field(default=())


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectedGpu(_Model):
    """One accelerator as its tool reports it."""

    name: str
    memory_bytes: int
    compute_capability: str | None = None
    cores: int | None = None


class DetectedCpu(_Model):
    """Host CPU: model, physical cores, hardware threads, SIMD support."""

    model: str
    cores: int
    threads: int
    avx2: bool
    avx512: bool
    flags: list[str]


class DetectedHardware(_Model):
    """What this machine has, parsed from a ProbeResult."""

    kind: AcceleratorKind
    os_name: str
    arch: str
    gpus: list[DetectedGpu]
    cpu: DetectedCpu
    ram_bytes: int
    read_ahead_kb: int | None = None  # the largest read-around of this machine's disks


class ProfileMatch(_Model):
    """The profile to plan with, how it was found, and why."""

    profile: Profile
    match: MatchKind
    reason: str
    closest_shipped: str | None


def parse_nvidia_smi(text: str) -> list[DetectedGpu]:
    """Parse `nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,...,nounits`."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[1].isdigit():
            continue
        cc = parts[2] if len(parts) > 2 and re.fullmatch(r"\d+\.\d+", parts[2]) else None
        gpus.append(
            DetectedGpu(name=parts[0], memory_bytes=int(parts[1]) * MIB, compute_capability=cc)
        )
    return gpus


def _lower_keys(card: dict[str, Any]) -> dict[str, str]:
    return {str(k).strip().lower(): str(v).strip() for k, v in card.items()}


def parse_rocm_smi(text: str) -> list[DetectedGpu]:
    """Parse `rocm-smi --showproductname --showmeminfo vram --json`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return []
    if not isinstance(data, dict):
        return []
    gpus = []
    for key in sorted(data, key=lambda k: (len(k), k)):
        card = data[key]
        if not key.lower().startswith("card") or not isinstance(card, dict):
            continue
        fields = _lower_keys(card)
        vram = fields.get("vram total memory (b)", "")
        if not vram.isdigit():
            continue
        name = fields.get("card series") or fields.get("card model") or "AMD GPU"
        gfx = fields.get("gfx version") or None
        gpus.append(DetectedGpu(name=name, memory_bytes=int(vram), compute_capability=gfx))
    return gpus


def parse_amd_sysfs(values: tuple[str, ...]) -> list[DetectedGpu]:
    """Parse /sys/class/drm/card*/device/mem_info_vram_total contents (bytes)."""
    sizes = [int(v.strip()) for v in values if v.strip().isdigit()]
    # APUs report a small carve-out of system RAM here; that is no device to offload to.
    return [DetectedGpu(name="AMD GPU", memory_bytes=n) for n in sizes if n >= _AMD_MIN_VRAM]


def parse_sysctl(text: str) -> tuple[str, int | None]:
    """Parse `sysctl -n machdep.cpu.brand_string hw.memsize` into (chip, RAM bytes)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    chip = lines[0] if lines else ""
    mem = int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else None
    return chip, mem


def parse_system_profiler(text: str) -> tuple[str, int | None]:
    """Parse `system_profiler SPDisplaysDataType -json` into (GPU name, GPU core count)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return "", None
    for entry in data.get("SPDisplaysDataType", []) if isinstance(data, dict) else []:
        cores = str(entry.get("sppci_cores", ""))
        name = str(entry.get("sppci_model") or entry.get("_name") or "")
        if name:
            return name, int(cores) if cores.isdigit() else None
    return "", None


def parse_cpuinfo(text: str) -> DetectedCpu:
    """Parse /proc/cpuinfo: model, cores, threads and the SIMD flags llama.cpp uses."""
    model = ""
    threads = 0
    cores: set[tuple[str, str]] = set()
    flags: set[str] = set()
    physical = core = ""
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            threads += 1
        elif key in ("model name", "Model") and not model:
            model = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
            cores.add((physical, core))
        elif key in ("flags", "Features"):
            flags.update(value.split())
    found = [f for f in _X86_FLAGS if f in flags]
    found += [name for raw, name in _ARM_FLAGS.items() if raw in flags]
    return DetectedCpu(
        model=model or "unknown",
        cores=len(cores) or threads or 1,
        threads=threads or 1,
        avx2="avx2" in flags,
        avx512="avx512f" in flags,
        flags=found,
    )


def _is_apple_silicon(probe: ProbeResult) -> bool:
    return probe.os_name == "Darwin" and probe.arch in ("arm64", "aarch64")


def detect_hardware(probe: ProbeResult) -> DetectedHardware:
    """Turn raw tool outputs into what this machine has; GPUs win over CPU-only."""
    cpu = parse_cpuinfo(probe.cpuinfo or "")
    ram = probe.ram_bytes or 0
    gpus: list[DetectedGpu] = []
    kind: AcceleratorKind = "cpu"
    if probe.nvidia_csv and (gpus := parse_nvidia_smi(probe.nvidia_csv)):
        kind = "nvidia"
    elif gpus := parse_rocm_smi(probe.rocm_json or "") or parse_amd_sysfs(probe.amd_sysfs_vram):
        kind = "amd"
    elif _is_apple_silicon(probe):
        chip, memsize = parse_sysctl(probe.sysctl or "")
        gpu_name, gpu_cores = parse_system_profiler(probe.system_profiler_json or "")
        ram = memsize or ram
        chip = chip or gpu_name or "Apple Silicon"
        cpu = cpu.model_copy(update={"model": chip, "flags": ["neon", "dotprod"]})
        gpus = [DetectedGpu(name=gpu_name or chip, memory_bytes=ram, cores=gpu_cores)]
        kind = "apple"
    cores = probe.cpu_cores or cpu.cores
    threads = probe.cpu_threads or cpu.threads
    cpu = cpu.model_copy(update={"cores": cores, "threads": threads})
    return DetectedHardware(
        kind=kind, os_name=probe.os_name, arch=probe.arch, gpus=gpus, cpu=cpu, ram_bytes=ram,
        read_ahead_kb=parse_read_ahead(probe.read_ahead_kb),
    )  # fmt: skip


# Block devices that are not disks a model is read from: loop, RAM, compressed RAM, device
# mapper and software RAID (their read-around is the disk's below), optical and floppy.
NOT_DISKS = ("loop", "ram", "zram", "dm-", "md", "sr", "fd")
_LISTING_LINE = re.compile(r"^/sys/block/([A-Za-z0-9._-]{1,64})/queue/read_ahead_kb:([0-9]{1,9})$")


def read_ahead_listing(text: str) -> tuple[str, ...]:
    """Each real disk's read_ahead_kb from `grep -H . /sys/block/*/queue/read_ahead_kb` output
    (a remote host's: lines that are not that shape are skipped, at most 256 disks)."""
    out: list[str] = []
    for line in text.splitlines()[:1024]:
        m = _LISTING_LINE.match(line.strip())
        if m is not None and not m[1].startswith(NOT_DISKS):
            out.append(m[2])
    return tuple(out[:256])


def parse_read_ahead(values: tuple[str, ...]) -> int | None:
    """The largest sane read_ahead_kb among the disks' (a bigger read-around needs more room
    beside a mapped model: the conservative pick when the model's disk is not known)."""
    sane = [int(v) for v in (x.strip() for x in values) if v.isascii() and v.isdigit()]
    sane = [v for v in sane if MIN_READ_AHEAD_KB <= v <= MAX_READ_AHEAD_KB]
    return max(sane) if sane else None


def _gpu_model(name: str) -> str:
    """The model token of a GPU name: 'NVIDIA A100-SXM4-80GB' -> 'a100'."""
    words = [w for w in re.findall(r"[a-z0-9]+", name.lower()) if w not in _VENDOR_WORDS]
    return next((w for w in words if any(c.isdigit() for c in w)), " ".join(words))


def _apple_chip(name: str) -> tuple[str, str] | None:
    """('m2', 'ultra') from 'Apple M2 Ultra'; None if no Apple chip is named."""
    found = re.search(r"\b(m\d+)(?:\s+(pro|max|ultra))?\b", name.lower())
    return (found.group(1), found.group(2) or "") if found else None


def _norm(name: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", name.lower()))


def _ratio_off(a: float, b: float) -> float:
    return abs(a - b) / max(a, b, 1)


def _gib(n_bytes: float) -> int:
    return round(n_bytes / GIB)


def _host_note(detected: DetectedHardware, profile: Profile) -> str:
    if _ratio_off(detected.ram_bytes, profile.host_ram_bytes) <= _HOST_RAM_TOL:
        return ""
    return (
        f"; host RAM {_gib(detected.ram_bytes)} GiB and {detected.cpu.threads} CPUs taken from "
        f"this machine (the profile has {profile.host_ram_gib:g} GiB, {profile.cpu_cores})"
    )


def _with_disk(detected: DetectedHardware, profile: Profile) -> Profile:
    """`profile` with this machine's disk read-around, when one was read."""
    if detected.read_ahead_kb is None:
        return profile
    return profile.model_copy(update={"disk_read_ahead_kb": detected.read_ahead_kb})


def _with_host(detected: DetectedHardware, profile: Profile) -> Profile:
    update: dict[str, Any] = {}
    if detected.read_ahead_kb is not None:
        update["disk_read_ahead_kb"] = detected.read_ahead_kb
    if _ratio_off(detected.ram_bytes, profile.host_ram_bytes) > _HOST_RAM_TOL:
        update["host_ram_gib"] = round(detected.ram_bytes / GIB, 2)
        update["cpu_cores"] = detected.cpu.threads
    return profile.model_copy(update=update) if update else profile


def _match_gpu(detected: DetectedHardware, profiles: list[Profile]) -> ProfileMatch | None:
    first = detected.gpus[0]
    count = len(detected.gpus)
    for grade, tol, same_name in (
        ("exact", _GPU_MEM_EXACT, True),
        ("closest", _GPU_MEM_CLOSE, False),
    ):
        for p in profiles:
            if p.kind != detected.kind or p.gpu is None or p.gpu.count != count:
                continue
            name_ok = (
                _norm(p.gpu.name) == _norm(first.name)
                if same_name
                else (_gpu_model(p.gpu.name) == _gpu_model(first.name))
            )
            if name_ok and _ratio_off(p.gpu.memory_mib * MIB, first.memory_bytes) <= tol:
                what = f"{count}x {first.name}, {first.memory_bytes // MIB} MiB each"
                why = (
                    "same GPU, count and memory"
                    if grade == "exact"
                    else (
                        f"same GPU model and count, variant differs ({p.gpu.name} in the profile)"
                    )
                )
                return ProfileMatch(
                    profile=_with_host(detected, p),
                    match="exact"
                    if grade == "exact" and not _host_note(detected, p)
                    else "closest",
                    reason=f"{what}: {why}{_host_note(detected, p)}",
                    closest_shipped=p.id,
                )
    return None


def _match_apple(detected: DetectedHardware, profiles: list[Profile]) -> ProfileMatch | None:
    chip = _apple_chip(detected.cpu.model)
    for p in profiles:
        if p.kind != "apple" or chip is None or _apple_chip(p.name) != chip:
            continue
        if _ratio_off(p.host_ram_bytes, detected.ram_bytes) <= _CPU_RAM_TOL:
            return ProfileMatch(
                profile=_with_disk(detected, p),
                match="exact",
                reason=f"{detected.cpu.model}, {_gib(detected.ram_bytes)} GB: same chip and RAM",
                closest_shipped=p.id,
            )
    return None


def _cpu_arch(profile: Profile) -> str:
    return "arm64" if profile.kind == "apple" or "neon" in profile.cpu_flags else "x86_64"


def _detected_arch(detected: DetectedHardware) -> str:
    return "arm64" if detected.arch in ("arm64", "aarch64") else "x86_64"


def _match_cpu(detected: DetectedHardware, profiles: list[Profile]) -> ProfileMatch | None:
    for p in profiles:
        if p.kind != "cpu" or _cpu_arch(p) != _detected_arch(detected):
            continue
        same_ram = _ratio_off(p.host_ram_bytes, detected.ram_bytes) <= _CPU_RAM_TOL
        if p.cpu_cores == detected.cpu.threads and same_ram:
            return ProfileMatch(
                profile=_with_disk(detected, p),
                match="exact",
                reason=f"{detected.cpu.threads} CPUs and {_gib(detected.ram_bytes)} GiB RAM",
                closest_shipped=p.id,
            )
    return None


def _nearest_shipped(detected: DetectedHardware, profiles: list[Profile]) -> Profile | None:
    """The largest shipped profile of the same kind that does not exceed this machine."""
    same = [p for p in profiles if p.kind == detected.kind]
    if detected.kind == "cpu":
        same = [p for p in same if _cpu_arch(p) == _detected_arch(detected)]
    if detected.gpus and detected.kind in ("nvidia", "amd"):
        model = _gpu_model(detected.gpus[0].name)
        same = [p for p in same if p.gpu and _gpu_model(p.gpu.name) == model] or same
    if not same:
        return None
    have = _have_bytes(detected)
    fits = [
        p
        for p in same
        if _total_bytes(p) <= have * (1 + _CPU_RAM_TOL) and _units(p) <= _units_here(detected)
    ]
    if fits:
        return max(fits, key=lambda p: (_total_bytes(p), p.cpu_cores))
    return min(same, key=lambda p: (_total_bytes(p), p.cpu_cores))


def _total_bytes(profile: Profile) -> int:
    if profile.gpu is None:
        return profile.host_ram_bytes
    return profile.gpu.memory_mib * MIB * profile.gpu.count


def _units(profile: Profile) -> int:
    """What a profile has more of when it is bigger: GPUs, or CPUs for a CPU-only profile."""
    return profile.gpu.count if profile.gpu else profile.cpu_cores


def _units_here(detected: DetectedHardware) -> int:
    return len(detected.gpus) if detected.kind in ("nvidia", "amd") else detected.cpu.threads


def _have_bytes(detected: DetectedHardware) -> int:
    if detected.kind in ("cpu", "apple"):
        return detected.ram_bytes
    return sum(g.memory_bytes for g in detected.gpus)


def estimate_cpu_bandwidth_gbps(threads: int) -> float:
    """Assumed host bandwidth: one ~10 GB/s memory channel per 4 CPUs, 2 to 12 channels."""
    channels = min(max(threads // 4, 2), 12)
    return channels * _CPU_GBPS_PER_CHANNEL


def _adhoc_id(detected: DetectedHardware) -> str:
    ram = f"{_gib(detected.ram_bytes)}gb"
    if detected.kind == "cpu":
        return f"detected-cpu-{detected.cpu.threads}c-{ram}"
    if detected.kind == "apple":
        chip = _apple_chip(detected.cpu.model)
        name = "-".join(part for part in chip if part) if chip else "apple"
        return f"detected-apple-{name}-{ram}"
    gpu = detected.gpus[0]
    count = f"{len(detected.gpus)}x-" if len(detected.gpus) > 1 else ""
    mem = f"{_gib(gpu.memory_bytes)}gb"
    return f"detected-{detected.kind}-{count}{_gpu_model(gpu.name).replace(' ', '-')}-{mem}"


def _adhoc_runtimes(kind: AcceleratorKind) -> dict[Literal["llamacpp", "ollama"], RuntimeSpec]:
    if kind == "apple":
        note = "Docker on macOS cannot reach the Metal GPU; run natively."
        return {
            "llamacpp": RuntimeSpec(mode="native", note=note),
            "ollama": RuntimeSpec(mode="native", note=note),
        }
    llama, ollama = {
        "nvidia": ("ghcr.io/ggml-org/llama.cpp:server-cuda", "docker.io/ollama/ollama"),
        "amd": ("ghcr.io/ggml-org/llama.cpp:server-rocm", "docker.io/ollama/ollama:rocm"),
    }.get(kind, ("ghcr.io/ggml-org/llama.cpp:server", "docker.io/ollama/ollama"))
    return {
        "llamacpp": RuntimeSpec(mode="container", image=llama),
        "ollama": RuntimeSpec(mode="container", image=ollama),
    }


def build_adhoc_profile(detected: DetectedHardware, like: Profile | None) -> Profile:
    """A profile made from what was detected; unknown numbers borrowed from `like` or assumed."""
    cpu_bw = estimate_cpu_bandwidth_gbps(detected.cpu.threads)
    data: dict[str, Any] = {
        "id": _adhoc_id(detected),
        "kind": detected.kind,
        "host_ram_gib": round(detected.ram_bytes / GIB, 2) or 1,
        "cpu_cores": detected.cpu.threads,
        "cpu_bandwidth_gbps": cpu_bw,
        "cpu_flags": detected.cpu.flags,
        "runtimes": _adhoc_runtimes(detected.kind),
        "source": "detected on this machine (deployer detect)",
    }
    if detected.read_ahead_kb is not None:
        data["disk_read_ahead_kb"] = detected.read_ahead_kb
    cpu_peak = derived_cpu_peak_gflops(
        detected.cpu.threads, detected.cpu.flags, physical_cores=detected.cpu.cores
    )
    data["cpu_peak_gflops"] = cpu_peak
    peak_note = (
        f"cpu_peak_gflops {cpu_peak:g} derived ({detected.cpu.cores} physical cores x "
        f"{DEFAULT_CPU_GHZ:g} GHz x FP32 FLOPs a cycle by the widest FMA in the CPU flags)"
    )
    assumed = [f"cpu_bandwidth_gbps {cpu_bw:g} assumed (about 10 GB/s per memory channel)"]
    if detected.kind == "apple":
        chip = _apple_chip(detected.cpu.model)
        fraction = 0.75 if detected.ram_bytes > 36 * GIB else 0.67
        bandwidth = (
            like.cpu_bandwidth_gbps
            if like and _apple_chip(like.name) == chip
            else (_APPLE_BANDWIDTH_GBPS.get(chip, 100) if chip else 100)
        )
        um = like.unified_memory if like and _apple_chip(like.name) == chip else None
        gpu_peak = (um.gpu_peak_fp16_tflops if um else None) or round(
            bandwidth * DEFAULT_APPLE_FLOP_PER_BYTE / 1000, 1
        )
        data.update(
            name=f"{detected.cpu.model}, {_gib(detected.ram_bytes)} GB (detected)",
            unified_memory={"gpu_wired_fraction": fraction, "gpu_peak_fp16_tflops": gpu_peak},
            cpu_bandwidth_gbps=bandwidth,
        )
        assumed = [
            f"gpu_wired_fraction {fraction}, {bandwidth} GB/s and {gpu_peak:g} GPU TFLOPS from "
            "the chip's defaults"
        ]
    elif detected.gpus:
        gpu = detected.gpus[0]
        same_model = (
            like is not None
            and like.gpu is not None
            and (_gpu_model(like.gpu.name) == _gpu_model(gpu.name))
        )
        bandwidth = (
            like.gpu.bandwidth_gbps
            if same_model and like and like.gpu
            else (_GPU_BANDWIDTH_FALLBACK_GBPS)
        )
        peak = (like.gpu.peak_fp16_tflops if same_model and like and like.gpu else None) or round(
            bandwidth * DEFAULT_GPU_FLOP_PER_BYTE / 1000, 1
        )
        if not same_model:
            assumed.append(f"GPU bandwidth {bandwidth:g} GB/s assumed")
            assumed.append(
                f"GPU peak {peak:g} FP16 TFLOPS derived ({DEFAULT_GPU_FLOP_PER_BYTE:g} FLOP a "
                "byte of bandwidth)"
            )
        count = len(detected.gpus)
        data.update(
            name=f"{count}x {gpu.name} (detected)" if count > 1 else f"{gpu.name} (detected)",
            gpu={
                "name": gpu.name,
                "memory_mib": min(g.memory_bytes for g in detected.gpus) // MIB,
                "reserve_mib": _GPU_RESERVE_MIB,
                "bandwidth_gbps": bandwidth,
                "peak_fp16_tflops": peak,
                "compute_capability": gpu.compute_capability,
                "count": count,
            },
        )
    else:
        data.update(name=f"{detected.cpu.model}, {detected.cpu.threads} CPUs (detected)")
    assumed.append(peak_note)
    data["notes"] = "Built from this machine's hardware; " + "; ".join(assumed) + "."
    return validate_data(data, Profile, "the hardware detected")


def match_profile(detected: DetectedHardware, profiles: dict[str, Profile]) -> ProfileMatch:
    """The shipped profile that matches this machine, or an ad-hoc one built from it."""
    table = list(profiles.values())
    if detected.kind in ("nvidia", "amd"):
        found = _match_gpu(detected, table)
    elif detected.kind == "apple":
        found = _match_apple(detected, table)
    else:
        found = _match_cpu(detected, table)
    if found is not None:
        return found
    nearest = _nearest_shipped(detected, table)
    adhoc = build_adhoc_profile(detected, nearest)
    what = _describe(detected)
    reason = f"no shipped profile matches {what}; built {adhoc.id} from this machine"
    if nearest is not None:
        reason += f"; closest shipped {detected.kind} profile: {nearest.id}"
    return ProfileMatch(
        profile=adhoc,
        match="ad-hoc",
        reason=reason,
        closest_shipped=nearest.id if nearest else None,
    )


def _describe(detected: DetectedHardware) -> str:
    ram = f"{_gib(detected.ram_bytes)} GiB RAM"
    if detected.kind == "cpu":
        return f"{detected.cpu.threads} CPUs, {ram}"
    if detected.kind == "apple":
        return f"{detected.cpu.model}, {ram}"
    gpu = detected.gpus[0]
    return f"{len(detected.gpus)}x {gpu.name} ({gpu.memory_bytes // MIB} MiB)"


def closest_profile(
    detected: DetectedHardware, profiles: dict[str, Profile]
) -> tuple[str | None, str]:
    """(id of the shipped profile that matches, or None, and why)."""
    found = match_profile(detected, profiles)
    return (None if found.match == "ad-hoc" else found.profile.id), found.reason


def detected_profile(probe: ProbeResult, profiles: dict[str, Profile]) -> Profile:
    """The profile the planner should use for this machine: shipped match or ad-hoc."""
    return match_profile(detect_hardware(probe), profiles).profile
