"""`deployer fleet`: plan, deploy, status and down across an Ansible inventory."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import err_console, print_json
from deployer.cli.params import FleetImageOpt, ForksOpt, InventoryOpt, JsonOpt

if TYPE_CHECKING:  # planning and Ansible load only when a fleet command runs
    from deployer.core.fleet.hosts import HostPlan
    from deployer.core.fleet.run import FleetEdges, FleetRun

fleet_app = typer.Typer(
    name="fleet",
    help="Many hosts from an Ansible inventory: each gets the plan that fits its hardware.",
    no_args_is_help=True,
)
app.add_typer(fleet_app, name="fleet")


def _plans(inventory: Path, forks: int, image: str | None) -> tuple[FleetEdges, list[HostPlan]]:
    from deployer.cli import wiring
    from deployer.core.fleet.run import plan_fleet

    edges = wiring.fleet_edges(err_console.print)
    return edges, plan_fleet(inventory, forks, image, edges)


def _run(
    action: str, inventory: Path, forks: int, image: str | None, quiet: bool, **ctx: Any
) -> tuple[list[HostPlan], FleetRun]:
    """Plan every host, then run `action`'s playbook with live progress on stderr."""
    from deployer.cli.fleet_view import ProgressFactory
    from deployer.core.fleet.rollout import deploy_fleet
    from deployer.core.fleet.run import run_fleet

    edges, plans = _plans(inventory, forks, image)
    progress = ProgressFactory(quiet)
    flow = deploy_fleet if action == "deploy" else partial(run_fleet, action)
    try:
        return plans, flow(plans, inventory, edges, forks=forks, on_event=progress, **ctx)
    finally:
        progress.stop()


@fleet_app.command("plan")
def fleet_plan(
    inventory: InventoryOpt,
    forks: ForksOpt = 5,
    image: FleetImageOpt = None,
    check_hosts: Annotated[
        bool,
        typer.Option(
            "--check-hosts",
            help="Also check each host (Docker, compose, disk, port, "
            "registry, Hub); changes nothing.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Each host's plan: profile (given or detected), model, quant, port; nothing deployed."""

    def body() -> None:
        from deployer.cli.fleet_view import show
        from deployer.core.fleet.rollout import check_hosts as preflight
        from deployer.core.fleet.run import plan_rows

        edges, plans = _plans(inventory, forks, image)
        pre = preflight(plans, inventory, edges, forks=forks) if check_hosts else None
        rows = plan_rows(plans, keep_plan=as_json, preflight=pre)
        ok = all(r["result"] == "planned" for r in rows)
        if as_json:
            print_json({"ok": ok, "hosts": rows})
        else:
            show(rows, f"fleet plan: {inventory}", preflight=check_hosts)
        if not ok:
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
    image: FleetImageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy each host's plan: copy files, fetch weights, bring up, health check, smoke test."""

    def body() -> None:
        from deployer.cli.fleet_view import finish
        from deployer.core.fleet.run import check_rollout, result_rows

        check_rollout(serial, max_fail)
        plans, run = _run(
            "deploy", inventory, forks, image, as_json, check=check,
            serial=serial, max_fail_percentage=max_fail,
        )  # fmt: skip
        rows = result_rows(plans, run.outcomes)
        finish(rows, run.run_dir, as_json, f"fleet deploy: {inventory}")

    run_guarded(body)


@fleet_app.command("status")
def fleet_status(
    inventory: InventoryOpt,
    forks: ForksOpt = 5,
    image: FleetImageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What runs on each host now: container state, health, and whether it is today's plan."""

    def body() -> None:
        from deployer.cli.fleet_view import finish
        from deployer.core.fleet.run import result_rows

        plans, run = _run("status", inventory, forks, image, True)
        rows = result_rows(plans, run.outcomes, status=True)
        finish(rows, run.run_dir, as_json, f"fleet status: {inventory}")

    run_guarded(body)


@fleet_app.command("down")
def fleet_down(
    inventory: InventoryOpt,
    forks: ForksOpt = 5,
    purge: Annotated[bool, typer.Option("--purge", help="Also remove the weights.")] = False,
    image: FleetImageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop and remove each host's deployment (container, network, volumes, files)."""

    def body() -> None:
        from deployer.cli.fleet_view import finish
        from deployer.core.fleet.run import result_rows

        plans, run = _run("down", inventory, forks, image, as_json, purge=purge)
        finish(result_rows(plans, run.outcomes), run.run_dir, as_json, f"fleet down: {inventory}")

    run_guarded(body)


from deployer.cli import fleet_bench as _fleet_bench  # noqa: E402, F401  (registers 'fleet bench')
