"""Several models behind one llama-server router: which of them may be loaded together.

Each model is planned on its own, as `deployer plan` plans it; the router holds at most
`max_loaded` of them at once. A set of models fits when their host memory (and each device's
memory) added up, plus the router process itself, stays within the machine's budgets. The
deployment fits when every set of `max_loaded` models does; its memory limit is the sum for the
`max_loaded` largest.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

from deployer.core.errors import InvalidRequest
from deployer.core.fit.plan import PlanResult, machine_spec
from deployer.core.units import MIB, fmt_bytes

# The router is a llama-server without a model: measured 19.5 MiB resident on the pinned build
# (docs/multi-model.md); budgeted with room for its HTTP threads and the requests it forwards.
ROUTER_OVERHEAD_BYTES = 64 * MIB
MAX_MODELS = 8  # C(8, 4) = 70 sets at most: every one is checked and listed


@dataclass(frozen=True)
class ModelNeed:
    """What one planned model holds while loaded."""

    name: str
    host_bytes: int
    device_bytes: tuple[int, ...]  # per GPU, in the profile's device order

    @property
    def total_bytes(self) -> int:
        """Host plus every device."""
        return self.host_bytes + sum(self.device_bytes)


@dataclass(frozen=True)
class Combination:
    """One set of models loaded at the same time, and whether it fits."""

    names: tuple[str, ...]
    host_bytes: int  # the models' host memory plus the router's
    device_bytes: tuple[int, ...]
    fits: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "models": list(self.names),
            "host_bytes": self.host_bytes,
            "device_bytes": list(self.device_bytes),
            "fits": self.fits,
        }


@dataclass
class MultiPlan:
    """The plans of every model of a router deployment and which of them fit together."""

    names: list[str]
    results: list[PlanResult]
    max_loaded: int
    largest: Combination  # the `max_loaded` largest models: the memory limit's set
    combinations: list[Combination]
    host_budget_bytes: int
    device_budget_bytes: tuple[int, ...]

    @property
    def fits(self) -> bool:
        """Every model fits alone and every set of `max_loaded` fits together."""
        return all(r.fits for r in self.results) and all(c.fits for c in self.combinations)

    @property
    def memory_request_bytes(self) -> int:
        """The host memory of the largest set, router included: the container's plan."""
        return self.largest.host_bytes

    def as_dict(self) -> dict[str, Any]:
        """The `router` part of `deployer plan --json` for several models: the sets."""
        return {
            "max_loaded": self.max_loaded,
            "fits": self.fits,
            "router_overhead_bytes": ROUTER_OVERHEAD_BYTES,
            "host_budget_bytes": self.host_budget_bytes,
            "device_budget_bytes": list(self.device_budget_bytes),
            "largest": self.largest.as_dict(),
            "combinations": [c.as_dict() for c in self.combinations],
        }

    def models_list(self) -> list[dict[str, Any]]:
        """The `models` list of `deployer plan --json`: each model's own plan, with its name."""
        return [{"name": n, **r.as_dict()} for n, r in zip(self.names, self.results, strict=True)]


def need_of(name: str, result: PlanResult) -> ModelNeed:
    """What `result`'s chosen configuration holds on the host and each device."""
    mem = result.chosen.memory
    return ModelNeed(name, mem.host.total_bytes, tuple(d.total_bytes for d in mem.devices))


def check_max_loaded(max_loaded: int | None, n_models: int) -> int:
    """--max-loaded, 1..number of models; default: all of them."""
    if max_loaded is None:
        return n_models
    if not 1 <= max_loaded <= n_models:
        raise InvalidRequest(
            f"--max-loaded {max_loaded} is not between 1 and the {n_models} models given",
            f"Use --max-loaded 1 to {n_models}.",
        )
    return max_loaded


def _combine(
    needs: tuple[ModelNeed, ...], host_budget: int, device_budget: tuple[int, ...]
) -> Combination:
    host = ROUTER_OVERHEAD_BYTES + sum(n.host_bytes for n in needs)
    width = len(device_budget)
    devices = tuple(
        sum(n.device_bytes[i] for n in needs if i < len(n.device_bytes)) for i in range(width)
    )
    fits = host <= host_budget and all(d <= b for d, b in zip(devices, device_budget, strict=True))
    return Combination(tuple(n.name for n in needs), host, devices, fits)


def plan_models(names: list[str], results: list[PlanResult], max_loaded: int) -> MultiPlan:
    """Every set of `max_loaded` models checked against the profile's budgets."""
    if not 1 <= len(results) <= MAX_MODELS:
        raise InvalidRequest(
            f"{len(results)} models given; a router deployment serves 1 to {MAX_MODELS}",
            "Split them over several deployments.",
        )
    if len(set(names)) != len(names):
        raise InvalidRequest("two models have the same name", "Give each a name of its own.")
    profile = results[0].profile
    spec = machine_spec(profile)
    first = results[0].chosen.memory.devices
    device_budget = tuple(d.budget_bytes for d in first)
    needs = [need_of(n, r) for n, r in zip(names, results, strict=True)]
    combos = [
        _combine(c, spec.host_budget_bytes, device_budget) for c in combinations(needs, max_loaded)
    ]
    largest_needs = sorted(needs, key=lambda n: (-n.total_bytes, n.name))[:max_loaded]
    order = {n: i for i, n in enumerate(names)}
    largest_needs.sort(key=lambda n: order[n.name])
    largest = _combine(tuple(largest_needs), spec.host_budget_bytes, device_budget)
    return MultiPlan(
        names, results, max_loaded, largest, combos, spec.host_budget_bytes, device_budget
    )


def explain(plan: MultiPlan) -> str:
    """One line on what does not fit, and the flag that would change it."""
    bad = [c for c in plan.combinations if not c.fits]
    alone = [n for n, r in zip(plan.names, plan.results, strict=True) if not r.fits]
    if alone:
        return f"{', '.join(alone)} does not fit {plan.results[0].profile.id} even alone"
    if not bad:
        return "every set fits"
    worst = max(bad, key=lambda c: c.host_bytes)
    return (
        f"{len(bad)} of {len(plan.combinations)} sets of {plan.max_loaded} do not fit, e.g. "
        f"{' + '.join(worst.names)} needs {fmt_bytes(worst.host_bytes)} of "
        f"{fmt_bytes(plan.host_budget_bytes)} host memory"
    )


def largest_fitting(needs_total: list[int], budget: int) -> int:
    """How many of the largest models fit together (0 when the largest does not)."""
    used, n = ROUTER_OVERHEAD_BYTES, 0
    for size in sorted(needs_total, reverse=True):
        if used + size > budget:
            break
        used, n = used + size, n + 1
    return n
