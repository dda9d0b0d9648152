"""Memory and process limits of one deployment, derived from its plan, the same on every target
(compose `mem_limit`/`pids_limit`, systemd `MemoryMax=`/`TasksMax=`, k8s resources, and the
ContainerSpec of `deployer deploy`). launchd has no cgroups and gets none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deployer.core.plan import PlanResult
from deployer.core.units import MIB

# The cap on processes and threads of one deployment. llama-server runs about a thread per
# core for compute and per core for HTTP, Ollama a few dozen plus its runner's: 4096 is far
# above either on a 256-core host and still stops a runaway fork.
PIDS_LIMIT = 4096
MIN_MEMORY_BYTES = 512 * MIB


@dataclass(frozen=True)
class ResourceLimits:
    """Memory and process limits of one deployment, the same on every target."""

    memory_request_bytes: int  # the plan's host total (llama.cpp's host buffers), >= 512 MiB
    memory_limit_bytes: int  # plus the whole file: mapped weights are page cache in the cgroup
    pids: int = PIDS_LIMIT

    @property
    def request_mib(self) -> int:
        """The request in MiB (k8s `Mi`)."""
        return self.memory_request_bytes // MIB

    @property
    def limit_mib(self) -> int:
        """The limit in MiB (k8s `Mi`, compose `m`, systemd `M`: all 1024-based)."""
        return self.memory_limit_bytes // MIB


def resource_limits(result: PlanResult) -> ResourceLimits:
    """The limits every target carries, from the plan: host memory plus the file's pages."""
    host = result.chosen.memory.host
    request_mib = max(math.ceil(host.total_bytes / MIB), MIN_MEMORY_BYTES // MIB)
    file_mib = math.ceil(result.chosen.facts.weights.file_bytes / MIB)
    return ResourceLimits(request_mib * MIB, (request_mib + file_mib) * MIB)
