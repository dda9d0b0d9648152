"""Memory and process limits of one deployment, derived from its plan, the same on every target
(compose `mem_limit`/`pids_limit`, systemd `MemoryMax=`/`TasksMax=`, k8s resources, the
ContainerSpec of `deployer deploy`, the fleet's hosts). launchd has no cgroups and gets none.

The plan is the limit: the request is the plan's host total (the server's resident working set),
the limit that plus stated headroom, max(64 MiB, 5%) (docs/fit.md, "The plan is the limit").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deployer.core.fit.plan import PlanResult
from deployer.core.units import MIB

# Floors under the request: llama-server measured about 40 MiB beyond its buffers (docs/fit.md);
# Ollama runs a Go server beside its llama runner, sized here as before (not yet measured).
MIN_MEMORY_BYTES = 256 * MIB
MIN_OLLAMA_MEMORY_BYTES = 512 * MIB
# Headroom of the limit over the plan: page cache the server touches once while loading (the
# kernel reclaims it first), allocator slack and the health check's own process.
HEADROOM_MIN_BYTES = 64 * MIB
HEADROOM_FRACTION = 0.05
# llama-server runs a compute thread per core, an HTTP thread per hardware thread and a few of
# its own; the base covers those few, an init and a health check, the factor the rest.
PIDS_BASE = 128
PIDS_PER_CPU = 4


@dataclass(frozen=True)
class ResourceLimits:
    """Memory and process limits of one deployment, the same on every target."""

    memory_request_bytes: int  # the plan's host total (the resident working set), >= the floor
    memory_limit_bytes: int  # the request plus headroom_for(request)
    pids: int

    @property
    def request_mib(self) -> int:
        """The request in MiB (k8s `Mi`)."""
        return self.memory_request_bytes // MIB

    @property
    def limit_mib(self) -> int:
        """The limit in MiB (k8s `Mi`, compose `m`, systemd `M`: all 1024-based)."""
        return self.memory_limit_bytes // MIB


def pids_for(cpus: int) -> int:
    """Most processes and threads at once for a server that sees `cpus` CPUs."""
    return PIDS_BASE + PIDS_PER_CPU * max(cpus, 1)


def headroom_for(request_bytes: int) -> int:
    """Headroom of the memory limit over the plan's figure: max(64 MiB, 5%), whole MiB."""
    return max(HEADROOM_MIN_BYTES, math.ceil(request_bytes * HEADROOM_FRACTION / MIB) * MIB)


def memory_limits(
    host_bytes: int, pids: int, *, floor_bytes: int = MIN_MEMORY_BYTES
) -> ResourceLimits:
    """Limits for a server the plan says holds `host_bytes`: that figure (at least the floor,
    whole MiB) as the request, plus headroom_for(request) as the limit."""
    request = max(math.ceil(host_bytes / MIB), floor_bytes // MIB) * MIB
    return ResourceLimits(request, request + headroom_for(request), pids)


def resource_limits(result: PlanResult, *, host_cpus: int | None = None) -> ResourceLimits:
    """The limits every target carries, from the plan: its host total as the request, plus
    headroom as the limit; the process cap from the larger of the profile's cores and the CPUs
    the server will see (it sizes its thread pools by what it sees), when the caller knows them."""
    floor = MIN_OLLAMA_MEMORY_BYTES if result.request.backend == "ollama" else MIN_MEMORY_BYTES
    cpus = max(result.profile.cpu_cores, host_cpus or 0)
    return memory_limits(result.chosen.memory.host.total_bytes, pids_for(cpus), floor_bytes=floor)
