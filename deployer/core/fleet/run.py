"""The fleet use case: plan each host, write one run folder, run a playbook, read per-host results.

Ansible and the filesystem come in through `FleetRunner` (deployer.adapters.ansible.AnsibleFleet);
the planner, the Hub store and the environment's Hub settings through `FleetEdges`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from deployer.core.clock import Clock
from deployer.core.errors import DeployerError, InvalidRequest
from deployer.core.fleet.hosts import (
    HostOutcome,
    HostPlan,
    Weight,
    check_playbook_vars,
    deployment_name,
    failures_after_rescue,
    hosts_from_inventory,
    hub_weight,
    local_weight,
    outcomes_from_events,
    probe_from_facts,
    render_playbook,
    run_file,
)
from deployer.core.fleet.inventory import FleetHost, check_image
from deployer.core.fleet.shipping import FleetImage, ShipCache, registry_of
from deployer.core.hardware.detect import detect_hardware, match_profile
from deployer.core.hardware.profiles import Profile, get_profile, load_profiles
from deployer.core.model.adapter import Adapter, AdapterSource, load_adapters
from deployer.core.model.facts import ModelFacts
from deployer.core.model.ref import DemoRef, LocalRef, ModelRef, parse_model_ref
from deployer.core.pull.files import HubStore, LocalFiles, pull_model, remote_targets
from deployer.core.serve.image import IMAGE_REPO
from deployer.core.serve.prepare import (
    PlanInputs,
    Planner,
    RenderOptions,
    WeightsLocation,
    plan_fitting,
    prepare,
    unservable_reason,
)
from deployer.core.serve.render import default_name, model_alias, startup_timeout_s

EventFn = Callable[[dict[str, Any]], None]


class Preflighted(Protocol):
    """A preflight's per-host answers (deployer.core.fleet.rollout.Preflight)."""

    @property
    def probes(self) -> Mapping[str, Any]: ...

    def ok(self, host: str) -> bool: ...

    def outcome(self, host: str) -> HostOutcome: ...

    def row(self, host: str) -> dict[str, Any]: ...


OK_RESULTS = {"deployed", "unchanged", "would-deploy", "running", "removed", "already-gone"}


class PlaybookRun(Protocol):
    """What one playbook run left: its status and every runner event."""

    status: str
    events: list[dict[str, Any]]


class FleetRunner(Protocol):
    """Ansible and the run folder (deployer.adapters.ansible.AnsibleFleet)."""

    def read_inventory(self, path: Path) -> dict[str, Any]:
        """The inventory as Ansible reads it."""
        ...

    def new_run_dir(self, action: str) -> Path:
        """A new private run folder for `action`."""
        ...

    def write_file(self, path: Path, text: str) -> None:
        """Write `text` to `path`, making its folders."""
        ...

    def run_playbook(
        self,
        *,
        private_dir: Path,
        playbook: str,
        inventory: Path,
        extravars: dict[str, Any],
        limit: list[str],
        forks: int,
        check: bool = False,
        on_event: EventFn | None = None,
        hf_token: str | None = None,
        ident: str = "run",
    ) -> PlaybookRun:
        """Run `project/<playbook>` of `private_dir` on `limit` (artifacts under `ident`)."""
        ...

    def replay_command(
        self, private_dir: Path, playbook: str, inventory: Path, check: bool, limit: list[str]
    ) -> str:
        """The command that replays the run."""
        ...


class ImageResolver(Protocol):
    """The image hosts of one kind run when the inventory names none (wiring.fleet_image)."""

    def __call__(self, official: str, kind: str, backend: str) -> FleetImage:
        """The image to run, chosen on this machine as single-host `deploy` chooses it."""
        ...


@dataclass(frozen=True)
class FleetEdges:
    """What the fleet use case needs from outside core (built in deployer.cli.wiring)."""

    runner: FleetRunner
    planner: Planner
    hub_store: Callable[[], HubStore]
    check_backend: Callable[[str], None]
    files: LocalFiles
    clock: Clock
    ship_cache: ShipCache | None = None
    choose_image: ImageResolver | None = None
    image_source: str = "auto"
    hf_endpoint: str = "https://huggingface.co"
    hf_token: str | None = None
    say: Callable[[str], None] = field(default=lambda _msg: None)
    adapters: AdapterSource | None = None  # LoRA adapter files (deployer_lora); None: refused


@dataclass
class FleetRun:
    """Each host's outcome of one playbook run, and the folder that keeps it."""

    outcomes: dict[str, HostOutcome] = field(default_factory=dict)
    run_dir: Path | None = None


def _weights(ref: ModelRef, hp: HostPlan, edges: FleetEdges) -> list[Weight]:
    """Where the host gets its weights: copied from here (demo, local) or fetched from the Hub."""
    if isinstance(ref, DemoRef | LocalRef):
        pulled = pull_model(ref, hp.host.quant, files=edges.files, clock=edges.clock)
        return [local_weight(hp.models_dir, f.path, f.bytes, f.sha256 or None)
                for f in pulled.files]  # fmt: skip
    endpoint = edges.hf_endpoint.rstrip("/")
    return [
        hub_weight(hp.models_dir, endpoint, t.repo_id, t.commit, t.name, t.size, t.sha256)
        for t in remote_targets(ref, hp.quant, edges.hub_store())
    ]


def _fleet_image(
    given: str | None, official: str, kind: str, backend: str, edges: FleetEdges
) -> FleetImage:
    """The inventory's (or --image's) image as is; else the one single-host deploy would run."""
    local = edges.image_source.strip().lower() == "local"
    if given or edges.choose_image is None:
        tag = given or official
        held = edges.ship_cache.image_id(tag) if edges.ship_cache is not None else None
        why = f"{tag} ({'deployer_image/--image' if given else 'official'})"
        # deployer's own builds exist in no registry: they are shipped, never pulled.
        pullable = not local and not tag.startswith(f"{IMAGE_REPO}:")
        return FleetImage(tag, why, registry_of(tag) if pullable else None, held)
    return edges.choose_image(official, kind, backend)


def _adapters(h: FleetHost, edges: FleetEdges) -> tuple[Adapter, ...]:
    """The host's deployer_lora adapters, read here (Hub ones pulled here, then shipped)."""
    if not h.lora:
        return ()
    if edges.adapters is None:
        raise InvalidRequest("deployer_lora needs an adapter reader (none was configured)")
    return load_adapters(list(h.lora), edges.adapters)


def _adapter_weight(a: Adapter, hp: HostPlan, edges: FleetEdges) -> Weight:
    """An adapter file as the host gets it: copied from here, its sha256 checked there."""
    size = edges.files.size_bytes(a.path)
    return local_weight(hp.models_dir, str(a.path), size, edges.files.sha256(a.path))


def plan_one(h: FleetHost, profile: Profile, image: str | None, edges: FleetEdges) -> HostPlan:
    """One host's plan, weights and rendered files (reason set when it does not fit)."""
    edges.check_backend(h.backend)
    ref = parse_model_ref(h.model)
    adapters = _adapters(h, edges)
    inputs = PlanInputs(quant=h.quant, ctx=h.ctx, backend=h.backend, adapters=adapters,
                        prompt_cache_mib=h.prompt_cache_mib)  # fmt: skip
    result = plan_fitting(ref, profile, inputs, edges.planner, require=False)
    hp = HostPlan(host=h, profile_id=profile.id, model=result.model, plan=result.as_dict())
    hp.quant = result.chosen.facts.quant
    hp.fits = result.fits
    # Named before anything can refuse it: status and down must still find what runs there.
    hp.name = h.name or deployment_name(default_name(result.model), h.host)
    problem = unservable_reason(result)
    if problem is not None:
        hp.reason = problem
        return hp
    if not result.fits:
        hp.reason = f"{result.model} does not fit {profile.id}; run 'deployer plan {h.model} --profile {profile.id}'"
        return hp

    # Adapters are shipped from here like local weights and served from where they land.
    shipped = [_adapter_weight(a, hp, edges) for a in adapters]
    result.adapters = [
        replace(a, path=Path(w.dest)) for a, w in zip(adapters, shipped, strict=True)
    ]

    def locate(ref: ModelRef, _facts: ModelFacts) -> WeightsLocation:
        hp.weights = _weights(ref, hp, edges)
        dests = [w.dest for w in [*hp.weights, *shipped]]
        if len(set(dests)) != len(dests):
            raise InvalidRequest(
                f"inventory host {h.host}: two of its weights and adapter files share a file name",
                "Rename an adapter file: they all land in one models folder on the host.",
            )
        hp.weights += shipped
        return WeightsLocation(Path(hp.weights[0].dest))

    given = h.image or image
    options = RenderOptions(
        backend=h.backend, target="compose", port=h.port, expose=h.expose,
        image=given, api_key_file=Path(f"{hp.dir}/api_key") if h.expose else None,
    )  # fmt: skip
    bundle = prepare(ref, result, name=hp.name, locate=locate, options=options).bundle
    hp.fleet_image = _fleet_image(given, bundle.image or "", profile.kind, h.backend, edges)
    if hp.fleet_image.tag != bundle.image:
        # The chosen image decides the compose file's health check: render with it.
        options = replace(options, image=hp.fleet_image.tag)
        bundle = prepare(ref, result, name=hp.name, locate=locate, options=options).bundle
    hp.files = dict(bundle.files)
    hp.image = bundle.image or ""
    # llama-server answers to its alias; Ollama to the model the playbook creates (the name).
    hp.model_alias = model_alias(result.model) if h.backend == "llamacpp" else hp.name
    hp.health_retries = startup_timeout_s(sum(w.size for w in hp.weights))
    return hp


def _detect_profiles(
    inventory: Path, hosts: list[FleetHost], forks: int, edges: FleetEdges
) -> tuple[dict[str, tuple[Profile, str]], dict[str, str]]:
    """Profiles of the 'detect' hosts from their Ansible facts; reasons for hosts that failed."""
    wanted = [h.host for h in hosts if h.profile == "detect"]
    if not wanted:
        return {}, {}
    run_dir = edges.runner.new_run_dir("facts")
    edges.runner.write_file(run_dir / "project" / "facts.yml", render_playbook("facts"))
    edges.say(f"reading hardware facts of {len(wanted)} host(s)")
    res = edges.runner.run_playbook(
        private_dir=run_dir, playbook="facts.yml", inventory=inventory, extravars={},
        limit=wanted, forks=forks,
    )  # fmt: skip
    outcomes = outcomes_from_events(res.events, wanted, default="failed")
    profiles = load_profiles()
    found: dict[str, tuple[Profile, str]] = {}
    failed: dict[str, str] = {}
    for host, o in outcomes.items():
        if o.result != "facts":
            failed[host] = f"could not read its hardware: {o.reason or o.result}"
            continue
        match = match_profile(
            detect_hardware(probe_from_facts(o.details["facts"], o.details["tools"])), profiles
        )
        found[host] = (match.profile, f"{match.match}: {match.reason}")
    return found, failed


def plan_fleet(inventory: Path, forks: int, image: str | None, edges: FleetEdges) -> list[HostPlan]:
    """Every host's plan; a host that cannot be planned carries its reason, never fatal."""
    if image is not None:
        check_image(image, "--image")
    hosts = hosts_from_inventory(edges.runner.read_inventory(inventory))
    detected, failed = _detect_profiles(inventory, hosts, forks, edges)
    plans: list[HostPlan] = []
    for h in hosts:
        if h.host in failed:
            plans.append(HostPlan(host=h, reason=failed[h.host]))
            continue
        try:
            prof, how = detected[h.host] if h.host in detected else (get_profile(h.profile), None)
            hp = plan_one(h, prof, image, edges)
            hp.detected = how
        except DeployerError as exc:
            hp = HostPlan(host=h, reason=exc.message())
        plans.append(hp)
    return plans


def check_rollout(serial: str | None, max_fail: int | None) -> None:
    """Refuse a --serial or --max-fail-percentage the playbook cannot take."""
    # Rendered into the playbook: ASCII digits only (str.isdigit() also takes '²', '１').
    if serial is not None and not re.fullmatch(r"[0-9]{1,6}%?", serial):
        raise InvalidRequest(
            f"--serial {serial!r} is not a number or a percentage",
            "Use e.g. --serial 2 or --serial 50%.",
        )
    if max_fail is not None and not 0 <= max_fail <= 100:
        raise InvalidRequest("--max-fail-percentage must be between 0 and 100")


def takes_part(action: str, hp: HostPlan) -> bool:
    """Deploy needs a plan that fits; status and down only need to know the deployment."""
    return hp.ok if action == "deploy" else bool(hp.name)


def _write_run(
    action: str, plans: list[HostPlan], inventory: Path, check: bool, playbook: str,
    ready: list[str], runner: FleetRunner, run_dir: Path | None = None,
    host_vars: dict[str, dict[str, Any]] | None = None,
) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """The run's private data dir: playbook, each host's rendered files, README; the variables."""
    run_dir = run_dir or runner.new_run_dir(action)
    runner.write_file(run_dir / "project" / f"{action}.yml", playbook)
    fleet: dict[str, Any] = {}
    for hp in plans:
        if not takes_part(action, hp) or hp.host.host not in ready:
            continue
        # The host name was validated where the inventory was read: one plain path segment.
        files_dir = run_dir / "project" / "files" / hp.host.host
        for rel, text in hp.files.items():
            runner.write_file(files_dir / run_file(rel), text)
        fleet[hp.host.host] = hp.as_var(str(files_dir)) | (host_vars or {}).get(hp.host.host, {})
    extravars = {"deployer_fleet": check_playbook_vars(fleet, "fleet variables")}
    replay = runner.replay_command(run_dir, f"{action}.yml", inventory, check, ready)
    runner.write_file(
        run_dir / "README.txt",
        f"deployer fleet {action}: one ansible-runner run, kept so it can be inspected and replayed.\n"
        "project/   the playbook and each host's rendered files\n"
        "env/       the variables (no secrets: API keys are made on the hosts)\n"
        "artifacts/ ansible-runner's events and output (preflight/: the preflight's)\n\n"
        f"Replay:\n  {replay}\n",
    )
    return run_dir, extravars


def run_fleet(
    action: str,
    plans: list[HostPlan],
    inventory: Path,
    edges: FleetEdges,
    *,
    forks: int,
    check: bool = False,
    on_event: Callable[[list[str]], EventFn] | None = None,
    run_dir: Path | None = None,
    only: list[str] | None = None,
    host_vars: dict[str, dict[str, Any]] | None = None,
    **render_ctx: Any,
) -> FleetRun:
    """Run `action`'s playbook on the hosts that take part (or `only` those); each outcome."""
    ready = [hp.host.host for hp in plans if takes_part(action, hp)]
    if only is not None:
        ready = [h for h in ready if h in only]
    if not ready:
        return FleetRun(run_dir=run_dir)
    playbook = render_playbook(action, **render_ctx)
    run_dir, extravars = _write_run(
        action, plans, inventory, check, playbook, ready, edges.runner, run_dir, host_vars
    )
    # Only a deploy downloads weights; the token never goes to any other playbook.
    token = edges.hf_token if action == "deploy" else None
    res = edges.runner.run_playbook(
        private_dir=run_dir, playbook=f"{action}.yml", inventory=inventory,
        extravars=extravars, limit=ready, forks=forks, check=check,
        on_event=on_event(ready) if on_event else None, hf_token=token,
    )  # fmt: skip
    default = "would-deploy" if check and action == "deploy" else "failed"
    outcomes = outcomes_from_events(res.events, ready, default=default)
    first = failures_after_rescue(res.events)
    for host, o in outcomes.items():
        if o.result == "failed" and not o.reason and host in first:
            o.reason = first[host]
        if o.result == "not-run" and res.status != "successful":
            o.reason = (
                "not run: Ansible stopped the play (max fail percentage or serial batch failed)"
            )
    return FleetRun(outcomes, run_dir)


def plan_rows(
    plans: list[HostPlan], keep_plan: bool, preflight: Preflighted | None = None
) -> list[dict[str, Any]]:
    """`fleet plan`'s row per host; with a preflight, each host's findings and whether it is
    ready (`not-ready` with the first problem as its reason)."""
    rows = []
    for hp in plans:
        row = hp.as_dict()
        row["result"] = "planned" if hp.ok else "not-planned"
        if not keep_plan:
            row.pop("plan")
        if preflight is not None and hp.ok:
            host = hp.host.host
            if host in preflight.probes:
                row["preflight"] = preflight.row(host)
            if not preflight.ok(host):
                o = preflight.outcome(host)
                row.update(result="not-ready", reason=o.reason, step=o.step or None)
        rows.append(row)
    return rows


def result_rows(
    plans: list[HostPlan], outcomes: dict[str, HostOutcome], *, status: bool = False
) -> list[dict[str, Any]]:
    """A row per host: its plan and what the run did there (status: judged healthy or not)."""
    rows = []
    for hp in plans:
        row = hp.as_dict()
        row.pop("plan")
        o = outcomes.get(hp.host.host)
        if o is None:
            row.update(result="not-planned" if not hp.ok else "not-run", step=None)
        else:
            row.update(o.as_dict())
            if o.reason:
                row["reason"] = o.reason
        if (
            status
            and row["result"] == "running"
            and (row.get("state") != "running" or row.get("health") != "200")
        ):
            row["result"] = "unhealthy"
            row["reason"] = f"container {row.get('state')}, /health answered {row.get('health')}"
        elif status and row["result"] == "absent":
            row["reason"] = "no container; run 'deployer fleet deploy'"
        rows.append(row)
    return rows
