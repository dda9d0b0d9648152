"""`deployer ps`, `deployer logs`, `deployer down`: deployments as records and containers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from deployer.cli import wiring
from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import cells, console, print_json
from deployer.cli.params import JsonOpt
from deployer.core.errors import DeploymentGone, InvalidStateLeft
from deployer.core.state.deployments import current_statuses, find, log_source
from deployer.core.state.records import DeploymentStatus, invalid_name, uptime_s
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


def fmt_uptime(seconds: float | None) -> str:
    """45s, 12m, 3h05m, 2d04h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def status_json(st: DeploymentStatus) -> dict[str, Any]:
    """One `ps --json` row."""
    r, c = st.record, st.container
    live = st.status not in ("exited", "gone", "unknown", "invalid")
    return {
        "name": st.name,
        "status": st.status,
        "model": r.model if r else (c.labels.get("io.deployer.model") if c else None),
        "quant": r.quant if r else (c.labels.get("io.deployer.quant") if c else None),
        "backend": r.backend if r else (c.labels.get("io.deployer.backend") if c else None),
        "runtime": r.runtime if r else "container",
        "endpoint": r.endpoint if r else None,
        "uptime_s": uptime_s(st.started_at) if live else None,
        "container_id": c.id if c else (r.container_id if r else None),
        "pid": r.pid if r else None,
        "image": c.image if c else (r.image if r else None),
        "state_file": st.invalid.path
        if st.invalid
        else (wiring.record_store().record_path(r.name) if r else None),
        "problem": st.invalid.message() if st.invalid else None,
    }


@app.command()
def ps(json_out: JsonOpt = False) -> None:
    """List deployments: records reconciled with the containers Docker has."""

    def go() -> None:
        found = statuses(need_engine=False)
        rows = [status_json(s) for s in found]
        if json_out:
            print_json(rows)
            return
        if not rows:
            typer.echo("no deployments. Run 'deployer deploy demo' to start one.")
            return
        table = Table()
        for col in ("name", "model", "quant", "backend", "endpoint"):
            table.add_column(col, no_wrap=col in ("name", "endpoint"), overflow="fold")
        table.add_column("health", no_wrap=True, min_width=9)  # never "healt…"
        table.add_column("uptime", no_wrap=True, min_width=6)
        for row in rows:
            table.add_row(
                *cells(
                    row["name"],
                    row["model"] or "-",
                    row["quant"] or "-",
                    row["backend"] or "-",
                    row["endpoint"] or "-",
                    row["status"],
                    fmt_uptime(row["uptime_s"]),
                )
            )
        console.print(table)
        for st in found:
            if st.invalid is not None:
                typer.echo(printable(f"{st.name}: invalid: {st.invalid.message()}"))

    run_guarded(go)


def _tail_file(name: str, path: Path, tail: int, follow: bool) -> Iterator[str]:
    from deployer.adapters.native import last_lines, open_log

    f = open_log(path)
    if f is None:
        raise DeploymentGone(name, f"its log {path} is missing or not a regular file")
    with f:
        yield from last_lines(f, tail)
        pending = b""
        while follow:
            chunk = f.readline(1 << 20)
            if chunk:
                pending += chunk
                if pending.endswith(b"\n") or len(pending) >= 1 << 20:
                    yield pending.decode("utf-8", "replace").rstrip("\n")
                    pending = b""
            else:
                time.sleep(0.5)


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
            lines = _tail_file(name, source.file, tail, follow)
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
        for bad in result.invalid:
            typer.echo(printable(f"{invalid_name(bad)}: left alone: {bad.message()}"))
        if result.invalid:
            raise InvalidStateLeft(len(result.invalid))

    run_guarded(go)
