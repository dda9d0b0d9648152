"""The `fleet bench` use case: for each planned host in turn, open the route to its server (an
SSH tunnel to the host's loopback, or nothing on a local host), read its API key where it has
one, run bench's sweep through the route, close the route whatever happens; then sum.

Hosts are measured one after another, so the controller's own CPU and network never cap one
host's figures because another is being measured. A host that fails is one row with its reason;
the others go on. Every edge arrives through `FleetLink` (deployer/adapters/ssh_tunnel.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from deployer.core.bench.policy import LatencyTarget, default_levels
from deployer.core.bench.shapes import RequestShape
from deployer.core.bench.sweep import BenchResult, LoadRunner, SweepSpec, Target, run_sweep
from deployer.core.clock import Clock
from deployer.core.errors import DeployerError
from deployer.core.fleet.hosts import HostPlan
from deployer.core.fleet.routes import LOOPBACK, SshRoute, routes_from_inventory
from deployer.core.fleet.run import FleetEdges, plan_fleet
from deployer.core.fleet_bench.capacity import (
    FAILED,
    INTERRUPTED,
    NOT_RUN,
    OK_RESULTS,
    HostBench,
    fleet_total,
    judge,
)
from deployer.core.hardware.profiles import get_profile
from deployer.core.state.records import iso_seconds

KEY_FILE = "api_key"  # in the deployment's folder on the host (templates/ansible/deploy.yml.j2)


@dataclass(frozen=True)
class ServerFacts:
    """What a server says about itself (llama-server's /props, /v1/models); None: not said."""

    total_slots: int | None
    ctx: int | None
    model: str | None


class FleetLink(Protocol):
    """Reaching each host's server and measuring it (deployer.adapters.ssh_tunnel.SshLink)."""

    def tunnel(self, route: SshRoute, remote_port: int) -> AbstractContextManager[str]:
        """The base URL on this machine that reaches `remote_port` on the host's loopback, for
        the duration of the `with`; closed on the way out, whatever happened."""
        ...

    def read_key(self, route: SshRoute, path: str) -> str:
        """The API key in `path` on the host, into memory only (never printed or written)."""
        ...

    def server_facts(self, endpoint: str, api_key: str | None) -> ServerFacts:
        """What the server at `endpoint` says about itself."""
        ...

    def runner(
        self, endpoint: str, model: str, api_key: str | None, timeout_s: float
    ) -> LoadRunner:
        """bench's load generator for `endpoint`."""
        ...


@dataclass(frozen=True)
class FleetBenchOptions:
    """What the flags asked for; `levels` None: each host's 1, 2, 4, ... up to its slots."""

    levels: list[int] | None
    max_concurrency: int
    requests: int
    shape: RequestShape
    goal: LatencyTarget
    timeout_s: float


@dataclass
class FleetBench:
    """Each host's row, and the sum."""

    hosts: list[HostBench]
    options: FleetBenchOptions
    measured_at: str
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every host was measured (below the target counts as measured)."""
        return all(h.result in OK_RESULTS for h in self.hosts)

    @property
    def interrupted(self) -> bool:
        """Ctrl-C ended the run."""
        return any(h.result == INTERRUPTED for h in self.hosts)

    def as_dict(self, inventory: str) -> dict[str, Any]:
        """`deployer fleet bench --json` (a contract: docs/fleet.md lists every field)."""
        o = self.options
        return {
            "ok": self.ok,
            "inventory": inventory,
            "measured_at": self.measured_at,
            "latency_target": o.goal.as_dict(),
            "requests_per_level": o.requests,
            "concurrency": o.levels,
            "hosts": [h.as_dict() for h in self.hosts],
            "total": fleet_total(self.hosts),
            "interrupted": self.interrupted,
            "notes": self.notes,
        }


def _price(profile_id: str) -> float | None:
    try:
        price = get_profile(profile_id).price
    except DeployerError:
        return None
    return price.usd_per_hour if price is not None else None


def bench_host(
    hp: HostPlan, route: SshRoute, options: FleetBenchOptions, link: FleetLink, measured_at: str
) -> BenchResult:
    """One host's sweep through its route (closed when this returns or raises)."""
    h = hp.host
    with link.tunnel(route, h.port) as endpoint:
        key = link.read_key(route, f"{hp.dir}/{KEY_FILE}") if h.expose else None
        facts = link.server_facts(endpoint, key)
        levels = options.levels or default_levels(facts.total_slots or options.max_concurrency)
        target = Target(
            label=f"{h.host}/{hp.name}", endpoint=f"http://{LOOPBACK}:{h.port}", model=hp.model,
            quant=hp.quant or None, backend=h.backend, deployment=True,
            total_slots=facts.total_slots, ctx=facts.ctx, profile_id=hp.profile_id or None,
            usd_per_hour=_price(hp.profile_id) if hp.profile_id else None,
        )  # fmt: skip
        spec = SweepSpec(levels, options.requests, options.shape, options.goal, options.timeout_s)
        served = facts.model or hp.model_alias or "default"
        runner = link.runner(endpoint, served, key, options.timeout_s)
        return run_sweep(target, spec, runner, measured_at=measured_at)


def bench_fleet(
    plans: list[HostPlan],
    routes: Mapping[str, SshRoute | str],
    options: FleetBenchOptions,
    link: FleetLink,
    *,
    clock: Clock,
    on_host: Callable[[HostBench], None] | None = None,
    on_start: Callable[[HostBench], None] | None = None,
) -> FleetBench:
    """Measure every planned host in turn; one row per host, failures included (`on_start`
    hears of a host before its sweep, `on_host` of every row once done)."""
    out = FleetBench([], options, iso_seconds(clock.utc_now()))
    for hp in plans:
        h = hp.host
        route = routes.get(h.host, "no connection settings in the inventory")
        row = HostBench(h.host, FAILED, name=hp.name or None)
        if out.interrupted:
            row.result, row.reason = NOT_RUN, "not run: interrupted (Ctrl-C)"
        elif not hp.ok:
            row.reason = hp.reason or "no plan"
        elif isinstance(route, str):
            row.reason = route
        else:
            row.via = route.describe()
            if on_start is not None:
                on_start(row)
            try:
                row.bench = bench_host(hp, route, options, link, out.measured_at)
                row.result, row.reason = judge(row.bench)
            except DeployerError as exc:
                row.reason = exc.message()
            except KeyboardInterrupt:
                # Ctrl-C while the tunnel opened or the key was read (a sweep ends itself):
                # the hosts measured so far are kept, the rest are not run.
                row.result, row.reason = INTERRUPTED, "interrupted (Ctrl-C) before its sweep"
        out.hosts.append(row)
        if on_host is not None:
            on_host(row)
    return out


def bench_inventory(
    inventory: Path,
    options: FleetBenchOptions,
    link: FleetLink,
    edges: FleetEdges,
    *,
    forks: int,
    image: str | None,
    on_host: Callable[[HostBench], None] | None = None,
    on_start: Callable[[HostBench], None] | None = None,
) -> FleetBench:
    """Plan the fleet as `fleet status` does, find each host's route, measure every host."""
    plans = plan_fleet(inventory, forks, image, edges)
    listing = edges.runner.read_inventory(inventory)
    routes = routes_from_inventory(listing, [hp.host.host for hp in plans])
    return bench_fleet(plans, routes, options, link, clock=edges.clock, on_host=on_host,
                       on_start=on_start)  # fmt: skip
