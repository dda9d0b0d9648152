"""Ansible through ansible-runner: read an inventory, run a playbook in a private data dir.

The only module that imports ansible_runner. Nothing secret is handed to the runner: no
`envvars`, no passwords, no keys (runner writes those into the run folder). The process
environment is inherited, so an HF_TOKEN set here stays in memory.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.core.errors import DeployerError, ExternalUnavailable, InvalidRequest

EventFn = Callable[[dict[str, Any]], None]


def _missing(what: str) -> ExternalUnavailable:
    return ExternalUnavailable(
        "Ansible",
        f"{what} is not installed (fleets run through Ansible)",
        "Install it with: pip install 'deployer[fleet]' (ansible-core and ansible-runner)",
    )


@dataclass
class InventoryUnreadable(DeployerError):
    """ansible-inventory could not read the file."""

    path: str
    detail: str
    exit_code: int = 2

    def message(self) -> str:
        return (
            f"cannot read the inventory {self.path}: {self.detail}; "
            f"check it with 'ansible-inventory -i {shlex.quote(self.path)} --list'"
        )


def _runner() -> Any:
    try:
        import ansible_runner
    except ImportError:
        raise _missing("ansible-runner") from None
    # ansible_runner starts ansible-playbook from PATH: make it the one installed with this
    # Python (next to the interpreter in a venv; the scripts dir of a system-wide pip install).
    candidates = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    found = next((d for d in candidates if (d / "ansible-playbook").exists()), None)
    if found is None:
        if shutil.which("ansible-playbook") is None:
            raise _missing("ansible-core (ansible-playbook)")
    else:
        path = os.environ.get("PATH", "")
        if not path.startswith(str(found) + os.pathsep):
            os.environ["PATH"] = str(found) + os.pathsep + path
    return ansible_runner


def read_inventory(path: Path) -> dict[str, Any]:
    """`ansible-inventory --list` of `path`: groups and every host's resolved variables."""
    if not path.is_file():
        raise InvalidRequest(
            f"no inventory file at {path}", "Write one in Ansible's YAML format; see docs/fleet.md."
        )
    runner = _runner()
    out, err = runner.get_inventory(
        action="list", inventories=[str(path.resolve())], response_format="json", quiet=True
    )
    if not out or not isinstance(out, Mapping):
        detail = " ".join(str(err or "no output").split())[:400]
        raise InventoryUnreadable(str(path), detail)
    return dict(out)


@dataclass
class RunResult:
    """What ansible-runner reports after a playbook."""

    status: str  # successful | failed | timeout | canceled
    rc: int
    stats: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path = Path()


def run_playbook(
    *,
    private_dir: Path,
    playbook: str,
    inventory: Path,
    extravars: dict[str, Any],
    limit: list[str] | None = None,
    forks: int = 5,
    check: bool = False,
    on_event: EventFn | None = None,
) -> RunResult:
    """Run `project/<playbook>` of `private_dir` (already written) against `inventory`."""
    runner = _runner()
    events: list[dict[str, Any]] = []

    def handler(ev: dict[str, Any]) -> bool:
        events.append(ev)
        if on_event is not None:
            on_event(ev)
        return True  # keep runner's own artifacts: the run can be inspected afterwards

    cmdline = "--check --diff" if check else None
    r = runner.run(
        private_data_dir=str(private_dir),
        playbook=playbook,
        inventory=str(inventory.resolve()),
        extravars=extravars,
        limit=",".join(limit) if limit else None,
        forks=forks,
        cmdline=cmdline,
        event_handler=handler,
        quiet=True,
        ident="run",
        settings={"suppress_ansible_output": True},
    )
    return RunResult(
        status=str(r.status), rc=int(r.rc), stats=dict(r.stats or {}), events=events,
        run_dir=private_dir,
    )  # fmt: skip


def replay_command(
    private_dir: Path, playbook: str, inventory: Path, check: bool, limit: list[str]
) -> str:
    """The command that runs the same playbook with the same variables on the same hosts."""
    parts = [
        "ansible-playbook", "-i", str(inventory.resolve()),
        "-e", f"@{private_dir / 'env' / 'extravars'}",
        str(private_dir / "project" / playbook),
    ]  # fmt: skip
    if limit:
        parts += ["--limit", ",".join(limit)]
    if check:
        parts.append("--check")
    return " ".join(shlex.quote(p) for p in parts)


def write_json(path: Path, data: Any) -> None:
    """A JSON file written whole (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
