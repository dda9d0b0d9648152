"""What `deployer fleet` prints: live per-host progress, the result table, the JSON document."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from deployer.cli.output import cells, console, echo, err_console, line, print_json, styled
from deployer.core.fleet.run import OK_RESULTS

_EVENT_KINDS = {
    "runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_unreachable": "unreachable",
    "runner_retry": "waiting", "runner_on_start": "running",
}  # fmt: skip


class Progress:
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
        kind = _EVENT_KINDS.get(str(ev.get("event")))
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
        """End the live table, if one is shown."""
        if self.live is not None:
            self.live.stop()


class ProgressFactory:
    """Makes the Progress of a run once its hosts are known; stops it whatever happens."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.made: Progress | None = None

    def __call__(self, hosts: list[str]) -> Progress:
        self.made = Progress(hosts, self.quiet)
        return self.made

    def stop(self) -> None:
        """Stop the Progress made, if any."""
        if self.made is not None:
            self.made.stop()


def show(rows: list[dict[str, Any]], title: str, *, preflight: bool = False) -> None:
    """The result table, then each host's reason and last log lines."""
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
    if preflight:
        show_preflight(rows)
    for r in rows:
        if r.get("reason"):
            echo(f"{r['host']}: {r['reason']}")
        for log_line in (r.get("last_logs") or [])[-5:]:
            echo(f"  | {log_line}")


def _yes(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "no")


def show_preflight(rows: list[dict[str, Any]]) -> None:
    """What each host has, and how it will get what it lacks (`--check-hosts`)."""
    from rich.table import Table

    from deployer.core.units import fmt_bytes

    t = Table(title="preflight", title_justify="left")
    for col in ("host", "docker", "compose", "image", "disk free", "needs", "port free",
                "registry", "hub", "weights"):  # fmt: skip
        t.add_column(col, overflow="fold")
    for r in rows:
        p = r.get("preflight") or {}
        if not p:
            continue
        free = p.get("disk_free_bytes")
        weights = sorted(set((p.get("weights") or {}).values())) or ["-"]
        t.add_row(*cells(
            r["host"], _yes(p.get("docker")), p.get("compose") or "missing",
            p.get("image") or "-", fmt_bytes(free) if free is not None else "-",
            fmt_bytes(p.get("needs_bytes") or 0), _yes(p.get("port_free")),
            _yes(p.get("registry")), _yes(p.get("hub")), ", ".join(weights),
        ))  # fmt: skip
    console.print(t)


def finish(rows: list[dict[str, Any]], run_dir: Path | None, as_json: bool, title: str) -> None:
    """Print the rows (JSON or table and run folder); exit 1 unless every host is fine."""
    ok = all(r["result"] in OK_RESULTS for r in rows)
    if as_json:
        print_json({"ok": ok, "run_dir": str(run_dir) if run_dir else None, "hosts": rows})
    else:
        show(rows, title)
        if run_dir is not None:
            echo(f"run folder (inspect, replay): {run_dir}", err=True)
    if not ok:
        raise typer.Exit(1)
