"""`deployer ps`, `deployer logs`, `deployer down`: deployments as records and containers."""

from __future__ import annotations

from typing import Annotated

import typer

from deployer.cli import wiring
from deployer.cli.app import app
from deployer.cli.deployments_view import print_ps, status_json
from deployer.cli.errors import run_guarded
from deployer.cli.output import print_json
from deployer.cli.params import JsonOpt
from deployer.cli.router_view import add_router_models, print_router_models
from deployer.core.errors import InvalidStateLeft
from deployer.core.state.deployments import current_statuses, find, log_source
from deployer.core.state.records import DeploymentStatus, invalid_name
from deployer.core.untrusted import printable

NameArg = Annotated[str, typer.Argument(help="Deployment name (deployer ps).")]


def statuses(*, need_engine: bool) -> list[DeploymentStatus]:
    """Every deployment's status; a warning on stderr when the engine could not be asked."""
    scan = current_statuses(
        wiring.record_store(),
        wiring.docker_engine(),
        wiring.native_servers(),
        need_engine=need_engine,
    )
    if scan.warning is not None:
        typer.echo(f"warning: {printable(scan.warning)}", err=True)
    return scan.statuses


@app.command()
def ps(json_out: JsonOpt = False) -> None:
    """List deployments: records reconciled with the containers Docker has."""

    def go() -> None:
        found = statuses(need_engine=False)
        now = wiring.clock().utc_now()
        rows = [status_json(s, wiring.record_store().record_path, now) for s in found]
        add_router_models(rows, found)
        if json_out:
            print_json(rows)
            return
        if not rows:
            typer.echo("no deployments. Run 'deployer deploy demo' to start one.")
            return
        print_ps(rows, found)
        print_router_models(rows)

    run_guarded(go)


@app.command()
def logs(
    name: NameArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines from the end.", min=0)] = 100,
) -> None:
    """Print a deployment's server log (stdout and stderr)."""

    def go() -> None:
        source = log_source(name, find(name, statuses(need_engine=True)), wiring.native_servers())
        if source.file is not None:
            from deployer.adapters.native import follow_log

            lines = follow_log(name, source.file, tail, follow)
        else:
            assert source.container_id is not None  # a source is a file or a container
            lines = wiring.docker_engine().container_logs(
                container_id=source.container_id, tail=tail, follow=follow
            )
        try:
            for line in lines:
                typer.echo(printable(line))  # a server may log what a hostile model holds
        except KeyboardInterrupt:
            return  # Ctrl-C is how `logs -f` ends

    run_guarded(go)


def _prune_router_presets() -> None:
    """Router presets whose deployment is gone go too (a record that cannot be read keeps its)."""
    from deployer.adapters.router_files import prune_presets
    from deployer.core.errors import DeployerError

    store = wiring.record_store()

    def has_record(name: str) -> bool:
        try:
            return store.load(name) is not None
        except DeployerError:
            return True

    for name in prune_presets(has_record):
        typer.echo(printable(f"{name}: removed router preset"))


@app.command()
def down(
    name: Annotated[str | None, typer.Argument(help="Deployment name (deployer ps).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every deployment.")] = False,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete model files no other deployment uses.")
    ] = False,
) -> None:
    """Stop gracefully (SIGTERM, 10 s), then remove container, network, volumes and state."""

    def go() -> None:
        from deployer.core.state.teardown import down as take_down

        result = take_down(
            wiring.down_seams(),
            name,
            all_=all_,
            purge=purge,
            # printed as each step happens: the record's paths and names are quoted
            on_step=lambda step: typer.echo(printable(step.line())),
        )
        if result.nothing_to_do:
            typer.echo(
                printable(f"'{name}' is already gone: nothing to do" if name else "no deployments")
            )
        _prune_router_presets()
        for bad in result.invalid:
            typer.echo(printable(f"{invalid_name(bad)}: left alone: {bad.message()}"))
        if result.invalid:
            raise InvalidStateLeft(len(result.invalid))

    run_guarded(go)
