"""Hardware profiles: data in profiles/*.yaml, user overrides in <config>/profiles/*.yaml."""

from __future__ import annotations

import difflib
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployer.core.data_source import DataSource, data_source
from deployer.core.datafiles import (
    Id,
    ImageRef,
    Line,
    Prose,
    Token,
    parse_by_id,
)
from deployer.core.errors import ProfileNotFound
from deployer.core.units import GIB, MIB

AcceleratorKind = Literal["nvidia", "amd", "apple", "cpu"]
Backend = Literal["llamacpp", "ollama"]


# Physical bounds: a value outside them is a typo or an attack, never hardware. 64 TiB of memory
# and 100 TB/s of bandwidth are far above any machine sold; infinity and NaN are refused.
MAX_MEMORY_MIB = 64 * 1024 * 1024
MAX_BANDWIDTH_GBPS = 100_000.0
MAX_DEVICES = 256
MAX_CPU_CORES = 65_536
MAX_USD_PER_HOUR = 100_000.0
# 100 PFLOPS a device and 10 PFLOPS of CPU are far above anything sold.
MAX_DEVICE_TFLOPS = 100_000.0
MAX_CPU_GFLOPS = 10_000_000.0

# When a profile states no peak FLOPS (a user's own profile): a stated derivation, not a fact.
# GPUs: FLOPs per byte of memory bandwidth ("machine balance"); every shipped datacenter GPU is
# at 100-300 FP16 FLOP/byte, so 100 stays on the low side. Apple GPUs: about 35 (M2 Ultra 27.2
# TFLOPS over 800 GB/s). CPUs: cores x DEFAULT_CPU_GHZ x FP32 FLOPs per cycle per listed CPU,
# by the widest FMA the flags show, a listed CPU being half a core (a hardware thread); a
# detected machine's physical cores count whole.
DEFAULT_GPU_FLOP_PER_BYTE = 100.0
DEFAULT_APPLE_FLOP_PER_BYTE = 35.0
DEFAULT_CPU_GHZ = 2.5
CPU_FLOPS_PER_CYCLE = (("avx512f", 32), ("avx2", 16), ("neon", 16))
CPU_FLOPS_PER_CYCLE_OTHER = 8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GpuSpec(_Strict):
    """One accelerator device; a profile holds `count` identical ones."""

    name: Line
    memory_mib: int = Field(
        ge=1, le=MAX_MEMORY_MIB, description="total device memory as the driver reports it"
    )
    reserve_mib: int = Field(
        ge=0,
        le=MAX_MEMORY_MIB,
        description="runtime context the framework takes before any buffer (CUDA context)",
    )
    bandwidth_gbps: float = Field(gt=0, lt=MAX_BANDWIDTH_GBPS, description="memory bandwidth, GB/s")
    peak_fp16_tflops: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DEVICE_TFLOPS,
        description="dense FP16 tensor peak of one device, no sparsity (vendor datasheet)",
    )
    compute_capability: Token | None = None
    flash_attention: bool = True
    count: int = Field(default=1, ge=1, le=MAX_DEVICES)

    @model_validator(mode="after")
    def _check_reserve(self) -> GpuSpec:
        if self.reserve_mib >= self.memory_mib:
            raise ValueError("reserve_mib must be less than memory_mib")
        return self


class UnifiedMemory(_Strict):
    """Apple unified memory: the GPU may wire only part of RAM unless raised by sysctl."""

    gpu_wired_fraction: float = Field(gt=0, le=1)
    gpu_peak_fp16_tflops: float | None = Field(
        default=None, gt=0, le=MAX_DEVICE_TFLOPS, description="the GPU's FP16 peak"
    )
    raise_hint: Line = "sudo sysctl iogpu.wired_limit_mb=<MiB> (resets on reboot)"


class RuntimeSpec(_Strict):
    """How a backend runs on this profile: a container image, or natively."""

    mode: Literal["container", "native"]
    image: ImageRef | None = None
    note: Prose = ""


class Price(_Strict):
    """On-demand price where a cloud sells this machine."""

    usd_per_hour: float = Field(ge=0, le=MAX_USD_PER_HOUR)
    offering: Line
    source: Prose
    as_of: Line


DEFAULT_READ_AHEAD_KB = 128  # Linux's default for a block device
MIN_READ_AHEAD_KB = 4
MAX_READ_AHEAD_KB = 1 << 20


class Profile(_Strict):
    """A target machine: accelerators, host, runtimes and price."""

    id: Id
    name: Line
    kind: AcceleratorKind
    gpu: GpuSpec | None = None
    unified_memory: UnifiedMemory | None = None
    host_ram_gib: float = Field(ge=1 / 1024, le=MAX_MEMORY_MIB / 1024)
    cpu_cores: int = Field(ge=1, le=MAX_CPU_CORES)
    cpu_bandwidth_gbps: float = Field(
        gt=0, lt=MAX_BANDWIDTH_GBPS, description="host RAM bandwidth, GB/s"
    )
    cpu_peak_gflops: float | None = Field(
        default=None, gt=0, le=MAX_CPU_GFLOPS, description="FP32 FMA peak of the host's CPUs"
    )
    cpu_flags: list[Token] = Field(default_factory=list, max_length=256)
    disk_read_ahead_kb: int = Field(
        default=DEFAULT_READ_AHEAD_KB,
        ge=MIN_READ_AHEAD_KB,
        le=MAX_READ_AHEAD_KB,
        description="read_ahead_kb of the disk the model is read from (Linux's default: 128); "
        "a mapped model needs room for what the kernel reads around it",
    )
    runtimes: dict[Backend, RuntimeSpec]
    price: Price | None = None
    notes: Prose = ""
    source: Prose = Field(description="where the numbers come from")
    compute_source: Prose = Field(default="", description="where the peak FLOPS come from")

    @model_validator(mode="after")
    def _check_kind(self) -> Profile:
        if self.kind == "cpu" and self.gpu is not None:
            raise ValueError("a cpu profile has no gpu section")
        if self.kind in ("nvidia", "amd") and self.gpu is None:
            raise ValueError(f"a {self.kind} profile needs a gpu section")
        if self.kind == "apple" and self.unified_memory is None:
            raise ValueError("an apple profile needs a unified_memory section")
        return self

    @cached_property
    def host_ram_bytes(self) -> int:
        """Host RAM in bytes."""
        return int(self.host_ram_gib * GIB)

    @property
    def device_count(self) -> int:
        """Number of accelerator devices that hold weights (0 for CPU-only)."""
        if self.kind == "apple":
            return 1
        return self.gpu.count if self.gpu else 0

    def device_budget_bytes(self) -> int:
        """Memory one device can give to llama.cpp buffers, before our safety margin."""
        if self.kind == "apple":
            assert self.unified_memory is not None
            return int(self.host_ram_bytes * self.unified_memory.gpu_wired_fraction)
        if self.gpu is None:
            return 0
        return (self.gpu.memory_mib - self.gpu.reserve_mib) * MIB

    def device_bandwidth_gbps(self) -> float:
        """Bandwidth of the memory that holds offloaded weights."""
        return self.gpu.bandwidth_gbps if self.gpu else self.cpu_bandwidth_gbps

    def device_peak_flops(self) -> tuple[float, bool]:
        """(FLOP/s of one accelerator device, whether the profile states it); derived from the
        bandwidth when not stated (DEFAULT_GPU_FLOP_PER_BYTE, DEFAULT_APPLE_FLOP_PER_BYTE)."""
        if self.kind == "apple":
            assert self.unified_memory is not None
            stated = self.unified_memory.gpu_peak_fp16_tflops
            per_byte = DEFAULT_APPLE_FLOP_PER_BYTE
        elif self.gpu is not None:
            stated = self.gpu.peak_fp16_tflops
            per_byte = DEFAULT_GPU_FLOP_PER_BYTE
        else:
            return self.cpu_peak_flops()
        if stated is not None:
            return stated * 1e12, True
        return self.device_bandwidth_gbps() * 1e9 * per_byte, False

    def cpu_peak_flops(self) -> tuple[float, bool]:
        """(FLOP/s of the host's CPUs, whether the profile states it); derived from the cores,
        DEFAULT_CPU_GHZ and the widest FMA in cpu_flags when not stated."""
        if self.cpu_peak_gflops is not None:
            return self.cpu_peak_gflops * 1e9, True
        return derived_cpu_peak_gflops(self.cpu_cores, self.cpu_flags) * 1e9, False

    @property
    def flash_attention(self) -> bool:
        """Whether llama.cpp's flash attention is available on the devices."""
        return self.gpu.flash_attention if self.gpu else True


def derived_cpu_peak_gflops(
    cpu_cores: int, cpu_flags: list[str], *, physical_cores: int | None = None
) -> float:
    """The stated CPU derivation: cores x DEFAULT_CPU_GHZ x FP32 FLOPs a cycle by the flags.

    CPU_FLOPS_PER_CYCLE is per listed CPU with two hardware threads to a core (a cloud vCPU);
    when the physical core count is known (a detected machine), each core gets its full
    two-thread share, however many threads it runs."""
    flags = set(cpu_flags)
    per_cycle = next(
        (n for flag, n in CPU_FLOPS_PER_CYCLE if flag in flags), CPU_FLOPS_PER_CYCLE_OTHER
    )
    if physical_cores is not None:
        return physical_cores * DEFAULT_CPU_GHZ * per_cycle * 2
    return cpu_cores * DEFAULT_CPU_GHZ * per_cycle


def load_profiles(source: DataSource | None = None) -> dict[str, Profile]:
    """All profiles: shipped ones, then the user's (same id overrides); from the installed
    DataSource unless handed one."""
    texts = (source if source is not None else data_source()).yaml_texts("profiles")
    return parse_by_id(texts, Profile)


def get_profile(profile_id: str, profiles: dict[str, Profile] | None = None) -> Profile:
    """One profile by id, or ProfileNotFound with the closest ids."""
    table = profiles if profiles is not None else load_profiles()
    if profile_id in table:
        return table[profile_id]
    close = difflib.get_close_matches(profile_id, list(table), n=3, cutoff=0.4)
    raise ProfileNotFound(profile_id, close)
