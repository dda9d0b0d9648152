"""Memory and process limits of one deployment, derived from its plan, the same on every target
(compose `mem_limit`/`pids_limit`, systemd `MemoryMax=`/`TasksMax=`, k8s resources, and the
ContainerSpec of `deployer deploy`). launchd has no cgroups and gets none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deployer.core.fit.plan import PlanResult
from deployer.core.units import MIB

MIN_MEMORY_BYTES = 512 * MIB  # below this the runtime itself (server, init, libraries) does not fit
# llama-server runs a compute thread per core, an HTTP thread per hardware thread and a few of
# its own; the base covers those few, an init and a health check, the factor the rest.
PIDS_BASE = 128
PIDS_PER_CPU = 4


@dataclass(frozen=True)
class ResourceLimits:
    """Memory and process limits of one deployment, the same on every target."""

    memory_request_bytes: int  # the plan's host total (llama.cpp's host buffers), >= 512 MiB
    memory_limit_bytes: int  # plus the whole file: mapped weights are page cache in the cgroup
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


def resource_limits(result: PlanResult, *, host_cpus: int | None = None) -> ResourceLimits:
    """The limits every target carries, from the plan: host memory plus the file's pages; the
    process cap from the larger of the profile's cores and the CPUs the server will see (it
    sizes its thread pools by what it sees), when the caller knows them."""
    host = result.chosen.memory.host
    request_mib = max(math.ceil(host.total_bytes / MIB), MIN_MEMORY_BYTES // MIB)
    file_mib = math.ceil(result.chosen.facts.weights.file_bytes / MIB)
    cpus = max(result.profile.cpu_cores, host_cpus or 0)
    return ResourceLimits(request_mib * MIB, (request_mib + file_mib) * MIB, pids_for(cpus))
