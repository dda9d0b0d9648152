"""`fleet deploy` and `fleet plan --check-hosts`: preflight every host, decide how each gets
the image and the weights, prepare once on this machine what must be shipped, then deploy.

Ansible, the run folder and the controller's cache come in through FleetEdges (run.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.core.errors import DeployerError, InvalidRequest
from deployer.core.fleet.hosts import HostOutcome, HostPlan, outcomes_from_events, render_playbook
from deployer.core.fleet.preflight import (
    Decision,
    HostProbe,
    ProbeUnreadable,
    decide,
    preflight_row,
    probe_from_text,
    probe_request,
    transfers,
)
from deployer.core.fleet.run import EventFn, FleetEdges, FleetRun, run_fleet
from deployer.core.fleet.shipping import Blob, FleetImage, ImageArchive, Transfers
from deployer.core.model.ref import parse_model_ref
from deployer.core.pull.files import pull_model

PROBE_SCRIPT = "probe.py"


@dataclass
class Preflight:
    """Every host's preflight: what it has, what it lacks and how it gets it, or why not."""

    probes: dict[str, HostProbe] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    failed: dict[str, HostOutcome] = field(default_factory=dict)  # the preflight itself failed
    run_dir: Path | None = None

    def ok(self, host: str) -> bool:
        return host not in self.failed and self.decisions[host].ok

    def row(self, host: str) -> dict[str, Any]:
        """The host's findings, for the `preflight` JSON field."""
        return preflight_row(self.probes.get(host), self.decisions.get(host))

    def outcome(self, host: str) -> HostOutcome:
        """A host stopped by its preflight, as a failed outcome with the one-line reason."""
        if host in self.failed:
            return self.failed[host]
        d = self.decisions[host]
        return HostOutcome(host, "failed", d.reason, "preflight",
                           {"preflight": preflight_row(self.probes[host], d)})  # fmt: skip


def _image(hp: HostPlan) -> FleetImage:
    return hp.fleet_image or FleetImage(hp.image, hp.image, None, None)


def preflight(
    plans: list[HostPlan], inventory: Path, edges: FleetEdges, *, forks: int,
    run_dir: Path | None = None,
) -> Preflight:  # fmt: skip
    """Run the preflight play on every planned host and decide for each; changes nothing."""
    ready = [hp for hp in plans if hp.ok]
    out = Preflight()
    if not ready:
        return out
    runner = edges.runner
    run_dir = run_dir or runner.new_run_dir("preflight")
    out.run_dir = run_dir
    from deployer.core.data_source import data_source

    runner.write_file(run_dir / "project" / "preflight.yml", render_playbook("preflight"))
    runner.write_file(run_dir / "project" / PROBE_SCRIPT,
                      data_source().template_text(f"ansible/{PROBE_SCRIPT}"))  # fmt: skip
    endpoint = edges.hf_endpoint.rstrip("/")
    fleet = {hp.host.host: {"probe": probe_request(hp, _image(hp), endpoint)} for hp in ready}
    edges.say(f"preflight of {len(ready)} host(s)")
    names = [hp.host.host for hp in ready]
    res = runner.run_playbook(
        private_dir=run_dir, playbook="preflight.yml", inventory=inventory,
        extravars={"deployer_fleet": fleet}, limit=names, forks=forks, ident="preflight",
    )  # fmt: skip
    outcomes = outcomes_from_events(res.events, names, default="failed")
    sizes: dict[str, int] = {}
    for hp in ready:
        host, o = hp.host.host, outcomes[hp.host.host]
        if o.result != "probed":
            o.result = o.result if o.result == "unreachable" else "failed"
            o.reason = o.reason or "the preflight did not run"
            out.failed[host] = o
            continue
        try:
            probe = probe_from_text(str(o.details.get("probe", "")))
        except ProbeUnreadable as exc:
            out.failed[host] = HostOutcome(host, "failed", f"preflight: {exc}", "preflight")
            continue
        image = _image(hp)
        if image.local_id and image.tag not in sizes:
            sizes[image.tag] = edges.ship_cache.image_size(image.tag) if edges.ship_cache else 0
        out.probes[host] = probe
        out.decisions[host] = decide(hp, probe, image, image_bytes=sizes.get(image.tag, 0))
    return out


class _Shipments:
    """What this machine prepares once for every host that needs it: archives and blobs."""

    def __init__(self, edges: FleetEdges) -> None:
        self.edges = edges
        self.archives: dict[str, ImageArchive] = {}
        self.blobs: dict[tuple[str, str | None], Blob] = {}
        self.pulled: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}

    def archive(self, tag: str) -> ImageArchive:
        if tag not in self.archives:
            if self.edges.ship_cache is None:
                raise RuntimeError("no ship cache wired")  # wiring bug
            self.edges.say(f"saving {tag} once to ship it")
            self.archives[tag] = self.edges.ship_cache.image_archive(tag)
        return self.archives[tag]

    def _hub_file(self, hp: HostPlan, dest: str) -> tuple[str, str]:
        """A Hub weights file pulled once to this machine (the same pull as `deployer pull`)."""
        key = (hp.host.model, hp.quant)
        if key not in self.pulled:
            self.edges.say(f"pulling {hp.host.model} here once to ship it")
            res = pull_model(parse_model_ref(hp.host.model), hp.quant or None,
                             store=self.edges.hub_store(), files=self.edges.files,
                             clock=self.edges.clock)  # fmt: skip
            self.pulled[key] = {
                f.repo_file or Path(f.path).name: (f.path, f.sha256) for f in res.files
            }
        for name, found in self.pulled[key].items():
            if dest.endswith("/" + name):
                return found
        raise InvalidRequest(
            f"the pull of {hp.host.model} on this machine did not bring {Path(dest).name}",
            f"Run 'deployer pull {hp.host.model}' and check what it fetches.",
        )

    def blobs_for(self, hp: HostPlan, d: Decision) -> dict[str, Blob]:
        out: dict[str, Blob] = {}
        cache = self.edges.ship_cache
        for w in hp.weights:
            if d.weights.get(w.dest) != "ship" or cache is None:
                continue
            src, sha = (w.src, w.sha256) if w.src else self._hub_file(hp, w.dest)
            key = (src or "", sha)
            if key not in self.blobs:
                self.blobs[key] = cache.file_blob(src or "", sha or None, w.size)
            out[w.dest] = self.blobs[key]
        return out


def deploy_fleet(
    plans: list[HostPlan],
    inventory: Path,
    edges: FleetEdges,
    *,
    forks: int,
    check: bool = False,
    on_event: Callable[[list[str]], EventFn] | None = None,
    **render_ctx: Any,
) -> FleetRun:
    """Preflight, ship what hosts lack (once), deploy; each host's outcome with its reason."""
    run_dir = edges.runner.new_run_dir("deploy")
    pre = preflight(plans, inventory, edges, forks=forks, run_dir=run_dir)
    ready = [hp for hp in plans if hp.ok and pre.ok(hp.host.host)]
    # Already running today's plan and healthy (the preflight saw it): not handed to the play.
    same = {hp.host.host for hp in ready if pre.decisions[hp.host.host].unchanged}
    go = [hp for hp in ready if hp.host.host not in same]
    ship = _Shipments(edges)
    host_vars: dict[str, dict[str, Any]] = {}
    moved: dict[str, Transfers] = {}
    blocked: dict[str, HostOutcome] = {}
    for hp in go:
        host, d = hp.host.host, pre.decisions[hp.host.host]
        try:
            if check:  # nothing is prepared or sent in check mode: what would be is reported
                t = Transfers(image_action=d.image)
            else:
                archive = ship.archive(hp.image) if d.image == "ship" else None
                t = transfers(hp, d, pre.probes[host], archive=archive,
                              blobs=ship.blobs_for(hp, d))  # fmt: skip
        except DeployerError as exc:
            blocked[host] = HostOutcome(host, "failed", exc.message(), "prepare")
            continue
        moved[host] = t
        probe = pre.probes[host]
        host_vars[host] = t.as_var() | {"compose": probe.compose or "docker compose",
                                        "image": hp.image}  # fmt: skip
    names = [hp.host.host for hp in go if hp.host.host in host_vars]
    held = _held_by_max_fail(plans, pre, blocked, render_ctx.get("max_fail_percentage"))
    if held:
        names = []
    run = run_fleet("deploy", plans, inventory, edges, forks=forks, check=check,
                    on_event=on_event, run_dir=run_dir, only=names, host_vars=host_vars,
                    **render_ctx)  # fmt: skip
    outcomes = dict(run.outcomes)
    for hp in plans:
        host = hp.host.host
        if host in same:
            outcomes[host] = HostOutcome(host, "unchanged", details={
                "endpoint": f"http://127.0.0.1:{hp.host.port}",
                "transfers": Transfers().summary(), "preflight": pre.row(host)})  # fmt: skip
        elif host in host_vars and held:
            outcomes[host] = HostOutcome(host, "not-run", held)
        elif hp.ok and not pre.ok(host):
            outcomes[host] = pre.outcome(host)
        elif host in blocked:
            outcomes[host] = blocked[host]
        elif host in moved and host in outcomes:
            outcomes[host].details["transfers"] = moved[host].summary()
            outcomes[host].details["preflight"] = preflight_row(
                pre.probes[host], pre.decisions[host]
            )
    return FleetRun(outcomes, run_dir)


def _held_by_max_fail(
    plans: list[HostPlan], pre: Preflight, blocked: dict[str, HostOutcome], max_fail: int | None
) -> str:
    """With --max-fail-percentage, hosts failing before the play count as the play would count
    them: above the limit, no host is deployed (the reason), else ''."""
    planned = [hp.host.host for hp in plans if hp.ok]
    failed = [h for h in planned if not pre.ok(h) or h in blocked]
    if max_fail is None or not planned or 100 * len(failed) <= max_fail * len(planned):
        return ""
    return (
        f"not run: {len(failed)} of {len(planned)} hosts failed the preflight, above the max "
        f"fail percentage ({max_fail}%)"
    )


def check_hosts(
    plans: list[HostPlan], inventory: Path, edges: FleetEdges, *, forks: int
) -> Preflight:
    """`fleet plan --check-hosts`: the preflight alone."""
    return preflight(plans, inventory, edges, forks=forks)
