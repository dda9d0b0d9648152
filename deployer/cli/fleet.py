"""`deployer fleet`: plan, deploy, status and down across an Ansible inventory."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import cells, console, echo, err_console, line, print_json, styled
from deployer.cli.params import JsonOpt

if TYPE_CHECKING:  # planning and Ansible load only when a fleet command runs
    from deployer.adapters.ansible import RunResult
    from deployer.core.fleet.hosts import HostOutcome, HostPlan
    from deployer.core.fleet.inventory import FleetHost

fleet_app = typer.Typer(
    name="fleet",
    help="Many hosts from an Ansible inventory: each gets the plan that fits its hardware.",
    no_args_is_help=True,
)
app.add_typer(fleet_app, name="fleet")

InventoryOpt = Annotated[
    Path, typer.Option("--inventory", "-i", help="Ansible inventory (YAML or JSON).")
]
ForksOpt = Annotated[int, typer.Option("--forks", help="Hosts Ansible works on at once.")]
ImageOpt = Annotated[
    str | None, typer.Option("--image", help="Runtime image for hosts without deployer_image.")
]

OK_RESULTS = {"deployed", "unchanged", "would-deploy", "running", "removed", "already-gone"}


def _plan_one(h: FleetHost, profile: Any, image: str | None) -> HostPlan:
    from deployer.cli import wiring
    from deployer.core.fleet.hosts import HostPlan, deployment_name, hub_weight, local_weight
    from deployer.core.model.ref import DemoRef, LocalRef, parse_model_ref
    from deployer.core.serve.render import default_name, model_alias, render_plan, startup_timeout_s

    wiring.check_backend(h.backend)
    ref = parse_model_ref(h.model)
    result = wiring.plan_for(
        ref, profile, quant=h.quant, ctx=h.ctx, parallel=1, kv_type="f16", backend=h.backend
    )
    hp = HostPlan(host=h, profile_id=profile.id, model=result.model, plan=result.as_dict())
    hp.quant = result.chosen.facts.quant
    hp.fits = result.fits
    # Named before anything can refuse it: status and down must still find what runs there.
    hp.name = h.name or deployment_name(default_name(result.model), h.host)
    if not result.fits:
        hp.reason = f"{result.model} does not fit {profile.id}; run 'deployer plan {h.model} --profile {profile.id}'"
        return hp
    if isinstance(ref, DemoRef | LocalRef):
        from deployer.core.pull.files import pull_model

        pulled = pull_model(ref, h.quant)
        hp.weights = [local_weight(hp.models_dir, f.path, f.bytes) for f in pulled.files]
    else:
        from deployer.core.pull.files import remote_targets

        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        hp.weights = [
            hub_weight(hp.models_dir, endpoint, t.repo_id, t.commit, t.name, t.size, t.sha256)
            for t in remote_targets(ref, hp.quant, wiring.hub_store())
        ]
    key = Path(f"{hp.dir}/api_key") if h.expose else None
    bundle = render_plan(
        result,
        backend=h.backend,
        target="compose",
        model_path=Path(hp.weights[0].dest),
        port=h.port,
        expose=h.expose,
        name=hp.name,
        image=h.image or image,
        api_key_file=key,
    )
    hp.files = dict(bundle.files)
    hp.image = bundle.image or ""
    # llama-server answers to its alias; Ollama to the model the playbook creates (the name).
    hp.model_alias = model_alias(result.model) if h.backend == "llamacpp" else hp.name
    hp.health_retries = startup_timeout_s(sum(w.size for w in hp.weights))
    return hp


def _detect_profiles(
    inventory: Path, hosts: list[FleetHost], forks: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """Profiles of the 'detect' hosts from their Ansible facts; reasons for hosts that failed."""
    from deployer.adapters.ansible import run_playbook
    from deployer.core.fleet.hosts import outcomes_from_events, probe_from_facts, render_playbook
    from deployer.core.hardware.detect import detect_hardware, match_profile
    from deployer.core.hardware.profiles import load_profiles

    wanted = [h.host for h in hosts if h.profile == "detect"]
    if not wanted:
        return {}, {}
    run_dir = _new_run_dir("facts")
    _write_project(run_dir, "facts", render_playbook("facts"))
    err_console.print(f"reading hardware facts of {len(wanted)} host(s)")
    res = run_playbook(
        private_dir=run_dir, playbook="facts.yml", inventory=inventory, extravars={},
        limit=wanted, forks=forks,
    )  # fmt: skip
    outcomes = outcomes_from_events(res.events, wanted, default="failed")
    profiles = load_profiles()
    found: dict[str, Any] = {}
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


def _plans(inventory: Path, forks: int, image: str | None) -> list[HostPlan]:
    from deployer.adapters.ansible import read_inventory
    from deployer.core.fleet.hosts import HostPlan, hosts_from_inventory
    from deployer.core.fleet.inventory import check_image
    from deployer.core.hardware.profiles import get_profile

    if image is not None:
        check_image(image, "--image")
    hosts = hosts_from_inventory(read_inventory(inventory))
    detected, failed = _detect_profiles(inventory, hosts, forks)
    from deployer.core.errors import DeployerError

    plans: list[HostPlan] = []
    for h in hosts:
        if h.host in failed:
            plans.append(HostPlan(host=h, reason=failed[h.host]))
            continue
        try:
            if h.host in detected:
                prof, how = detected[h.host]
            else:
                prof, how = get_profile(h.profile), None
            hp = _plan_one(h, prof, image)
            hp.detected = how
        except DeployerError as exc:
            hp = HostPlan(host=h, reason=exc.message())
        plans.append(hp)
    return plans


def _new_run_dir(action: str) -> Path:
    import secrets
    from datetime import UTC, datetime

    from deployer.core.resources import state_dir

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = state_dir() / "fleet" / "runs" / f"{stamp}-{action}-{secrets.token_hex(3)}"
    path.mkdir(parents=True, mode=0o700)
    return path


def _write_project(run_dir: Path, action: str, playbook: str) -> None:
    project = run_dir / "project"
    project.mkdir(exist_ok=True)
    (project / f"{action}.yml").write_text(playbook)


def _takes_part(action: str, hp: HostPlan) -> bool:
    """Deploy needs a plan that fits; status and down only need to know the deployment."""
    return hp.ok if action == "deploy" else bool(hp.name)


def _prepare(action: str, plans: list[HostPlan], playbook: str) -> tuple[Path, dict[str, Any]]:
    """The run's private data dir: playbook, each host's rendered files, and the variables."""
    from deployer.core.fleet.hosts import check_playbook_vars, run_file

    run_dir = _new_run_dir(action)
    _write_project(run_dir, action, playbook)
    fleet: dict[str, Any] = {}
    for hp in plans:
        if not _takes_part(action, hp):
            continue
        # The host name was validated where the inventory was read: one plain path segment.
        files_dir = run_dir / "project" / "files" / hp.host.host
        for rel, text in hp.files.items():
            target = files_dir / run_file(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        fleet[hp.host.host] = hp.as_var(str(files_dir))
    return run_dir, {"deployer_fleet": check_playbook_vars(fleet, "fleet variables")}


def _write_readme(
    run_dir: Path, action: str, inventory: Path, check: bool, hosts: list[str]
) -> None:
    from deployer.adapters.ansible import replay_command

    (run_dir / "README.txt").write_text(
        f"deployer fleet {action}: one ansible-runner run, kept so it can be inspected and replayed.\n"
        "project/   the playbook and each host's rendered files\n"
        "env/       the variables (no secrets: API keys are made on the hosts)\n"
        "artifacts/ ansible-runner's events and output\n\n"
        f"Replay:\n  {replay_command(run_dir, f'{action}.yml', inventory, check, hosts)}\n"
    )


class _Progress:
    """One line per host per finished step (a live table on a terminal), not Ansible's log."""

    def __init__(self, hosts: list[str], quiet: bool) -> None:
        self.quiet = quiet
        self.width = max((len(h) for h in hosts), default=4)
        self.started = time.monotonic()
        self.state: dict[str, tuple[str, str]] = {h: ("waiting", "") for h in hosts}
        self.live: Any = None
        if not quiet and err_console.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(), console=err_console, refresh_per_second=8)
            self.live.start()

    def _table(self) -> Any:
        from rich.table import Table

        t = Table(box=None, show_header=False)
        for host, (step, state) in self.state.items():
            t.add_row(*cells(host, state, step))
        return t

    def __call__(self, ev: dict[str, Any]) -> None:
        kinds = {
            "runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_unreachable": "unreachable",
            "runner_retry": "waiting", "runner_on_start": "running",
        }  # fmt: skip
        kind = kinds.get(str(ev.get("event")))
        data = ev.get("event_data") or {}
        host = data.get("host")
        if kind is None or host not in self.state:
            return
        task = str(data.get("task") or "")
        if kind == "ok" and (data.get("res") or {}).get("changed"):
            kind = "changed"
        if kind == "failed" and data.get("ignore_errors"):
            kind = "ok"
        self.state[host] = (task, kind)
        if self.live is not None:
            self.live.update(self._table())
        elif not self.quiet and kind != "running":
            t = time.monotonic() - self.started
            echo(f"{t:6.1f}s  {host:<{self.width}}  {kind:<8} {task}", err=True)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()


def _run(
    action: str,
    plans: list[HostPlan],
    inventory: Path,
    *,
    forks: int,
    check: bool = False,
    quiet: bool = False,
    **render_ctx: Any,
) -> tuple[RunResult | None, dict[str, HostOutcome], Path | None]:
    from deployer.adapters.ansible import run_playbook
    from deployer.core.fleet.hosts import (
        failures_after_rescue,
        outcomes_from_events,
        render_playbook,
    )

    ready = [hp.host.host for hp in plans if _takes_part(action, hp)]
    if not ready:
        return None, {}, None
    run_dir, extravars = _prepare(action, plans, render_playbook(action, **render_ctx))
    _write_readme(run_dir, action, inventory, check, ready)
    progress = _Progress(ready, quiet)
    # Only a deploy downloads weights; the token never goes to any other playbook.
    token = (os.environ.get("HF_TOKEN") or None) if action == "deploy" else None
    try:
        res = run_playbook(
            private_dir=run_dir, playbook=f"{action}.yml", inventory=inventory,
            extravars=extravars, limit=ready, forks=forks, check=check, on_event=progress,
            hf_token=token,
        )  # fmt: skip
    finally:
        progress.stop()
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
    return res, outcomes, run_dir


def _rows(plans: list[HostPlan], outcomes: dict[str, HostOutcome]) -> list[dict[str, Any]]:
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
        rows.append(row)
    return rows


def _show(rows: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    t = Table(title=line(title), title_justify="left")
    for col in ("host", "profile", "model", "quant", "result", "endpoint"):
        t.add_column(col, overflow="fold")
    for r in rows:
        ok = r["result"] in OK_RESULTS or r["result"] == "planned"
        colour = "green" if ok else "red"
        t.add_row(
            *cells(r["host"], r["profile"], r["model"], r["quant"] or "-"),
            styled(r["result"], colour), *cells(r.get("endpoint") or "-"),
        )  # fmt: skip
    console.print(t)
    for r in rows:
        if r.get("reason"):
            echo(f"{r['host']}: {r['reason']}")
        for log_line in (r.get("last_logs") or [])[-5:]:
            echo(f"  | {log_line}")


def _finish(rows: list[dict[str, Any]], run_dir: Path | None, as_json: bool, title: str) -> None:
    ok = all(r["result"] in OK_RESULTS for r in rows)
    if as_json:
        print_json({"ok": ok, "run_dir": str(run_dir) if run_dir else None, "hosts": rows})
    else:
        _show(rows, title)
        if run_dir is not None:
            echo(f"run folder (inspect, replay): {run_dir}", err=True)
    if not ok:
        raise typer.Exit(1)


@fleet_app.command("plan")
def fleet_plan(
    inventory: InventoryOpt,
    forks: ForksOpt = 5,
    image: ImageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each host's plan: profile (given or detected), model, quant, port; nothing deployed."""

    def body() -> None:
        plans = _plans(inventory, forks, image)
        rows = []
        for hp in plans:
            row = hp.as_dict()
            row["result"] = "planned" if hp.ok else "not-planned"
            if not as_json:
                row.pop("plan")
            rows.append(row)
        if as_json:
            print_json({"ok": all(hp.ok for hp in plans), "hosts": rows})
        else:
            _show(rows, f"fleet plan: {inventory}")
        if not all(hp.ok for hp in plans):
            raise typer.Exit(1)

    run_guarded(body)


@fleet_app.command("deploy")
def fleet_deploy(
    inventory: InventoryOpt,
    forks: ForksOpt = 5,
    serial: Annotated[
        str | None, typer.Option("--serial", help="Hosts per batch (rolling update): N or N%.")
    ] = None,
    max_fail: Annotated[
        int | None,
        typer.Option("--max-fail-percentage", help="Stop when more than this % of a batch fails."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Ansible check mode: change nothing.")
    ] = False,
    image: ImageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy each host's plan: copy files, fetch weights, bring up, health check, smoke test."""

    def body() -> None:
        from deployer.core.errors import InvalidRequest

        # Rendered into the playbook: ASCII digits only (str.isdigit() also takes '²', '１').
        if serial is not None and not re.fullmatch(r"[0-9]{1,6}%?", serial):
            raise InvalidRequest(
                f"--serial {serial!r} is not a number or a percentage",
                "Use e.g. --serial 2 or --serial 50%.",
            )
        if max_fail is not None and not 0 <= max_fail <= 100:
            raise InvalidRequest("--max-fail-percentage must be between 0 and 100")
        plans = _plans(inventory, forks, image)
        _, outcomes, run_dir = _run(
            "deploy", plans, inventory, forks=forks, check=check, quiet=as_json,
            serial=serial, max_fail_percentage=max_fail,
        )  # fmt: skip
        _finish(_rows(plans, outcomes), run_dir, as_json, f"fleet deploy: {inventory}")

    run_guarded(body)


@fleet_app.command("status")
def fleet_status(
    inventory: InventoryOpt,
    forks: ForksOpt = 5,
    image: ImageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What runs on each host now: container state, health, and whether it is today's plan."""

    def body() -> None:
        plans = _plans(inventory, forks, image)
        _, outcomes, run_dir = _run("status", plans, inventory, forks=forks, quiet=True)
        rows = _rows(plans, outcomes)
        for r in rows:
            if r["result"] == "running" and (
                r.get("state") != "running" or r.get("health") != "200"
            ):
                r["result"] = "unhealthy"
                r["reason"] = f"container {r.get('state')}, /health answered {r.get('health')}"
            elif r["result"] == "absent":
                r["reason"] = "no container; run 'deployer fleet deploy'"
        _finish(rows, run_dir, as_json, f"fleet status: {inventory}")

    run_guarded(body)


@fleet_app.command("down")
def fleet_down(
    inventory: InventoryOpt,
    forks: ForksOpt = 5,
    purge: Annotated[bool, typer.Option("--purge", help="Also remove the weights.")] = False,
    image: ImageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop and remove each host's deployment (container, network, volumes, files)."""

    def body() -> None:
        plans = _plans(inventory, forks, image)
        _, outcomes, run_dir = _run(
            "down", plans, inventory, forks=forks, quiet=as_json, purge=purge
        )
        _finish(_rows(plans, outcomes), run_dir, as_json, f"fleet down: {inventory}")

    run_guarded(body)
