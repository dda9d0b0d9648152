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
    cpu_flags: list[Token] = Field(default_factory=list, max_length=256)
    runtimes: dict[Backend, RuntimeSpec]
    price: Price | None = None
    notes: Prose = ""
    source: Prose = Field(description="where the numbers come from")

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

    @property
    def flash_attention(self) -> bool:
        """Whether llama.cpp's flash attention is available on the devices."""
        return self.gpu.flash_attention if self.gpu else True


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
