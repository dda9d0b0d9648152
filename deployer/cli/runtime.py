"""`deployer ps`, `deployer logs`, `deployer down`: deployments as records and containers."""

from __future__ import annotations

import difflib
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from deployer.cli import wiring
from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import cells, console, print_json
from deployer.cli.params import JsonOpt
from deployer.core.errors import (
    DeploymentGone,
    DeploymentNotFound,
    EngineUnavailable,
    InvalidRequest,
    InvalidStateLeft,
)
from deployer.core.state.records import (
    DeploymentRecord,
    DeploymentStatus,
    invalid_name,
    reconcile,
    uptime_s,
)
from deployer.core.untrusted import printable

if TYPE_CHECKING:
    from deployer.core.serve.containers import ContainerEngine

STOP_TIMEOUT_S = 10.0
NameArg = Annotated[str, typer.Argument(help="Deployment name (deployer ps).")]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (zombies count as gone)."""
    import psutil

    if pid <= 0:
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def current_statuses(*, need_engine: bool) -> list[DeploymentStatus]:
    """Records reconciled with labelled containers; without an engine only if allowed."""
    scan = wiring.record_store().scan()
    records = scan.records
    try:
        containers = wiring.docker_engine().list_deployer_containers()
    except EngineUnavailable as exc:
        if need_engine and any(r.runtime == "container" for r in records):
            raise
        if any(r.runtime == "container" for r in records):
            typer.echo(f"warning: {printable(exc.message())}", err=True)
        containers = None
    natives = {r.pid: r for r in records if r.runtime == "native" and r.pid is not None}
    statuses = reconcile(
        records, containers, pid_alive=lambda pid: _native_alive(natives[pid]), invalid=scan.invalid
    )
    return [_native_health(st) for st in statuses]


def _native_alive(record: DeploymentRecord) -> bool:
    """A native server lives while its pid is provably the process deploy started."""
    from deployer.adapters.native import our_server

    assert record.pid is not None  # only records with a pid are asked about
    return our_server(record.name, record.pid, record.port) is not None


def _native_health(st: DeploymentStatus) -> DeploymentStatus:
    """A running native server's /health: healthy (200), starting (503) or unhealthy."""
    if st.record is None or st.record.runtime != "native" or st.status != "running":
        return st
    from deployer.adapters.native import probe_health

    return replace(st, status=probe_health(st.record.endpoint))  # type: ignore[arg-type]


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
        statuses = current_statuses(need_engine=False)
        rows = [status_json(s) for s in statuses]
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
        for st in statuses:
            if st.invalid is not None:
                typer.echo(printable(f"{st.name}: invalid: {st.invalid.message()}"))

    run_guarded(go)


def _find(name: str, statuses: list[DeploymentStatus]) -> DeploymentStatus:
    for st in statuses:
        if st.name == name:
            if st.invalid is not None:
                raise st.invalid
            return st
    names = [s.name for s in statuses]
    raise DeploymentNotFound(name, difflib.get_close_matches(name, names, n=3))


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
        from deployer.cli import wiring

        st = _find(name, current_statuses(need_engine=True))
        r = st.record
        if r is not None and r.runtime == "native":
            from deployer.adapters.native import log_path_for

            if not r.log_path:
                raise DeploymentGone(name, "its record names no log file")
            if Path(r.log_path) != log_path_for(r.name):
                # a record is a file another local user may have written: print only the log
                # deploy writes for this name, never a file the record points elsewhere
                raise DeploymentGone(name, "its record names a log file deploy did not write")
            lines = _tail_file(name, Path(r.log_path), tail, follow)
        elif st.container is None:
            raise DeploymentGone(name, "its container was removed")
        else:
            lines = wiring.docker_engine().container_logs(
                container_id=st.container.id, tail=tail, follow=follow
            )
        try:
            for line in lines:
                typer.echo(printable(line))  # a server may log what a hostile model holds
        except KeyboardInterrupt:
            return  # Ctrl-C is how `logs -f` ends

    run_guarded(go)


def _stop_native(record: DeploymentRecord) -> str:
    """SIGTERM the server's process group, SIGKILL after STOP_TIMEOUT_S; only our own server."""
    from deployer.adapters.native import (
        NativeSupervisor,
        load_process,
        our_server,
        remove_process_file,
    )

    if record.pid is None:
        return "process already gone"
    if our_server(record.name, record.pid, record.port) is None:
        if not pid_alive(record.pid):
            remove_process_file(record.name)
            return "process already gone"
        # The pid lives but is not provably ours (reused, or the state was edited): a record
        # must never lead to signalling an unrelated process.
        return (
            f"pid {record.pid} is not the server deploy started (its pid file, start time or "
            "command line differ); left alone"
        )
    known = load_process(record.name)
    said = NativeSupervisor().stop(
        pid=record.pid,
        create_time=known.create_time if known is not None else None,
        timeout_s=STOP_TIMEOUT_S,
    )
    remove_process_file(record.name)
    return said


def _down_one(
    engine: ContainerEngine | None,
    st: DeploymentStatus,
    *,
    purge: bool,
    volume_owners: dict[str, str],
) -> None:
    r = st.record

    def say(text: str) -> None:
        typer.echo(printable(text))  # quotes the record's paths and names

    if r is not None and r.runtime == "native":
        say(f"{st.name}: {_stop_native(r)}")
        if r.log_path:
            say(f"{st.name}: log kept at {r.log_path}")
    elif engine is not None:
        # Only a container labelled with this deployment's name is ours to stop: a record's
        # container id alone could name anyone's container.
        removed = st.container is not None and engine.stop_and_remove(
            name_or_id=st.container.id, timeout_s=STOP_TIMEOUT_S
        )
        say(
            f"{st.name}: "
            + ("stopped and removed container" if removed else "container already gone")
        )
        for net in r.networks if r else []:
            if engine.remove_network(name=net):
                say(f"{st.name}: removed network {net}")
        # Volumes labelled for this deployment (its record may be lost); one the record lists
        # without that label is someone else's.
        labelled = [v for v, owner in volume_owners.items() if owner == st.name]
        for vol in labelled:
            if engine.remove_volume(name=vol):
                say(f"{st.name}: removed volume {vol}")
        for vol in r.volumes if r else []:
            if vol not in labelled:
                say(f"{st.name}: volume {vol} is not labelled for '{st.name}'; left alone")
    if r is None:
        return
    from deployer.adapters.secrets import remove_generated_key

    said = remove_generated_key(r.name, r.api_key_path)
    if said:
        say(f"{st.name}: {said}")
    if purge:
        from deployer.adapters.download import default_cache_dir
        from deployer.adapters.weights_purge import purge_weights

        remaining = wiring.record_store().scan().records
        result = purge_weights(remaining, r, hub_cache=default_cache_dir())
        for path in result.deleted:
            say(f"{st.name}: deleted {path}")
        for path, why in result.kept:
            say(f"{st.name}: kept {path} ({why})")
    wiring.record_store().delete(r.name)
    say(f"{st.name}: state removed")


def _volume_owners(engine: ContainerEngine) -> dict[str, str]:
    """Volumes labelled io.deployer.name -> their deployment; none when no engine answers."""
    try:
        return engine.list_deployer_volumes()
    except EngineUnavailable:
        return {}


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
        from deployer.cli import wiring

        if (name is None) == (not all_):
            raise InvalidRequest("name one deployment or pass --all, not both or neither")
        statuses = current_statuses(need_engine=True)
        targets = statuses if all_ else [s for s in statuses if s.name == name]
        # An invalid record decides nothing: what it names is left alone, and the user is told
        # how to clear it (after which `down` finds a labelled container as an orphan).
        invalid = [st.invalid for st in targets if st.invalid is not None]
        if invalid and not all_:
            raise invalid[0]
        targets = [st for st in targets if st.invalid is None]
        needs_engine = any(s.record is None or s.record.runtime == "container" for s in targets)
        engine = wiring.docker_engine() if needs_engine else None
        # Labelled volumes, listed once: each target's own, and strays whose deployment (its
        # container and record) is already gone, looked for with --all or an unknown name.
        look_for_strays = all_ or not targets
        volume_engine = engine or wiring.docker_engine()
        owners = _volume_owners(volume_engine) if engine or look_for_strays else {}
        for st in targets:
            _down_one(engine, st, purge=purge, volume_owners=owners)
        known = {st.name for st in targets}
        strays = {
            v: owner
            for v, owner in owners.items()
            if look_for_strays and owner not in known and (name is None or owner == name)
        }
        for vol, owner in strays.items():
            if volume_engine.remove_volume(name=vol):
                typer.echo(
                    printable(f"{owner}: removed volume {vol} (its deployment was already gone)")
                )
        if not targets and not strays and not invalid:
            typer.echo(
                printable(f"'{name}' is already gone: nothing to do" if name else "no deployments")
            )
        for bad in invalid:
            typer.echo(printable(f"{invalid_name(bad)}: left alone: {bad.message()}"))
        if invalid:
            raise InvalidStateLeft(len(invalid))

    run_guarded(go)
