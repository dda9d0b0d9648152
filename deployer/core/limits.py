"""Resource limits of a deployment, derived from its plan once, for every place that sets them:
the container deploy runs and the files render writes (the k8s Deployment today)."""

from __future__ import annotations

import math

from deployer.core.plan import PlanResult
from deployer.core.units import MIB

MEMORY_FLOOR_MIB = 512  # below this the runtime itself (server, init, libraries) does not fit
# llama-server runs a compute thread per core, an HTTP thread per hardware thread and a few of
# its own; the base covers those few, an init and a health check, the factor the rest.
PIDS_BASE = 128
PIDS_PER_CPU = 4


def memory_request_mib(result: PlanResult) -> int:
    """What the plan says the server holds in host memory, in MiB (at least the floor)."""
    return max(math.ceil(result.chosen.memory.host.total_bytes / MIB), MEMORY_FLOOR_MIB)


def memory_limit_mib(result: PlanResult) -> int:
    """The memory cap: the plan's host total plus room for the mapped weights' page cache,
    which counts against a cgroup's limit."""
    file_bytes = result.chosen.facts.weights.file_bytes
    return memory_request_mib(result) + math.ceil(file_bytes / MIB)


def memory_limit_bytes(result: PlanResult) -> int:
    """memory_limit_mib in bytes, for the container engine."""
    return memory_limit_mib(result) * MIB


def pids_limit(result: PlanResult, *, host_cpus: int | None = None) -> int:
    """Most processes and threads at once: enough for the server's threads on the larger of the
    profile's cores and the host's CPUs (the server sizes its pools by what it sees), no more."""
    cpus = max(result.profile.cpu_cores, host_cpus or 0)
    return PIDS_BASE + PIDS_PER_CPU * cpus
