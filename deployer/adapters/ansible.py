"""Ansible through ansible-runner: read an inventory, run a playbook in a private data dir.

The only module that imports ansible_runner. What the run folder keeps is never secret and
never evaluated:
- the playbook variables go to `env/extravars` as YAML with every text tagged `!unsafe`, so
  Ansible never templates a value that came from an inventory, the Hub or a file name;
- nothing secret goes through runner's `envvars`, passwords or keys (runner writes those
  there); ansible-runner records the whole environment in `artifacts/<ident>/command`, so the
  Hub token variables are taken out of the environment Ansible gets, the token reaches the
  deploy playbook as a 0600 file outside the run folder (removed when the run ends), and the
  recorded environment is reduced to its variable names once the run is over.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deployer.core.errors import DeployerError, ExternalUnavailable, InvalidRequest
from deployer.core.untrusted import CONTROL_RE, shown

EventFn = Callable[[dict[str, Any]], None]
# Environment variables that hold a Hub token: never in the environment Ansible runs with.
TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# The variable naming the token file, read by the deploy playbook (templates/ansible/).
TOKEN_FILE_VAR = "deployer_hf_token_file"
IDENT = "run"


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
            f"cannot read the inventory {shown(self.path)}: {self.detail}; "
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
    try:
        out, err = runner.get_inventory(
            action="list", inventories=[str(path.resolve())], response_format="json", quiet=True
        )
    except ValueError as exc:  # runner's JSON parse: e.g. a number too long to convert
        raise InventoryUnreadable(str(path), _one_line(str(exc))) from None
    if not out or not isinstance(out, Mapping):
        raise InventoryUnreadable(str(path), _one_line(str(err or "no output")))
    # Ansible only warns about a file it cannot parse, and lists an empty inventory.
    if "Unable to parse" in str(err):
        lines = str(err).splitlines()
        reason = next((ln for ln in lines if "Failed to parse" in ln), "Ansible cannot parse it")
        raise InventoryUnreadable(str(path), _one_line(reason.replace("[WARNING]:", "")))
    return dict(out)


def _one_line(text: str) -> str:
    return " ".join(CONTROL_RE.sub(" ", text).split())[:400]


@dataclass
class RunResult:
    """What ansible-runner reports after a playbook."""

    status: str  # successful | failed | timeout | canceled
    rc: int
    stats: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path = Path()


class _UnsafeDumper(yaml.SafeDumper):
    """YAML where every text is `!unsafe`: Ansible reads it literally, never as a template."""


def _unsafe_text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("!unsafe", value, style='"')


def _plain_keys(dumper: yaml.SafeDumper, value: Mapping[str, Any]) -> yaml.Node:
    # Keys stay plain text (variable and host names, validated): only values are data.
    pairs = [
        (yaml.ScalarNode("tag:yaml.org,2002:str", str(k), style='"'), dumper.represent_data(v))
        for k, v in value.items()
    ]
    return yaml.MappingNode("tag:yaml.org,2002:map", pairs)


_UnsafeDumper.add_representer(str, _unsafe_text)
_UnsafeDumper.add_representer(dict, _plain_keys)


class _UnsafeLoader(yaml.SafeLoader):
    """Reads `!unsafe` as text: how the written file is checked before Ansible sees it."""


def _as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise ValueError("!unsafe on a collection")
    return str(loader.construct_scalar(node))


_UnsafeLoader.add_constructor("!unsafe", _as_text)


def unsafe_yaml(data: Mapping[str, Any]) -> str:
    """`data` as YAML with every text value tagged `!unsafe`, checked by reading it back."""
    text = yaml.dump(dict(data), Dumper=_UnsafeDumper, allow_unicode=False, sort_keys=True,
                     width=1 << 16)  # fmt: skip
    if yaml.load(text, Loader=_UnsafeLoader) != data:
        raise ValueError("the playbook variables do not survive YAML")  # a bug, not an input
    return text


def write_extravars(private_dir: Path, data: Mapping[str, Any]) -> Path:
    """`env/extravars` of a run folder: what runner hands to ansible-playbook as `-e @FILE`."""
    path = private_dir / "env" / "extravars"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(unsafe_yaml(data))
    return path


def _forget_environment(artifact_dir: Path) -> None:
    """runner's `command` record keeps the command and the variable names, not their values."""
    record = artifact_dir / "command"
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    env = data.get("env") if isinstance(data, dict) else None
    if isinstance(env, dict):
        data["env"] = dict.fromkeys(sorted(env), "(value not kept)")
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(record)


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
    hf_token: str | None = None,
    ident: str = IDENT,
) -> RunResult:
    """Run `project/<playbook>` of `private_dir` (already written) against `inventory`.

    `hf_token`, if any, reaches the playbook only as the path of a private file outside the
    run folder (variable TOKEN_FILE_VAR), removed when the run ends.
    """
    _runner()  # ansible-playbook on PATH, or a one-line error
    from ansible_runner.interface import init_runner

    events: list[dict[str, Any]] = []

    def handler(ev: dict[str, Any]) -> bool:
        events.append(ev)
        if on_event is not None:
            on_event(ev)
        return True  # keep runner's own artifacts: the run can be inspected afterwards

    secret_dir = Path(tempfile.mkdtemp(prefix="deployer-fleet-token-")) if hf_token else None
    try:
        variables = dict(extravars)
        if secret_dir is not None and hf_token:
            token_file = secret_dir / "hf_token"
            token_file.touch(mode=0o600)
            token_file.write_text(hf_token)
            variables[TOKEN_FILE_VAR] = str(token_file)
        if variables:
            write_extravars(private_dir, variables)
        r = init_runner(
            private_data_dir=str(private_dir),
            playbook=playbook,
            inventory=str(inventory.resolve()),
            limit=",".join(limit) if limit else None,
            forks=forks,
            cmdline="--check --diff" if check else None,
            event_handler=handler,
            quiet=True,
            ident=ident,
            settings={"suppress_ansible_output": True},
        )
        for name in TOKEN_ENV:
            r.config.env.pop(name, None)
        try:
            r.run()
        finally:
            _forget_environment(private_dir / "artifacts" / ident)
    finally:
        if secret_dir is not None:
            shutil.rmtree(secret_dir, ignore_errors=True)
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


class AnsibleFleet:
    """The fleet's Ansible side: inventory, run folders under the state dir, ansible-runner."""

    def read_inventory(self, path: Path) -> dict[str, Any]:
        """The inventory as Ansible reads it."""
        return read_inventory(path)

    def new_run_dir(self, action: str) -> Path:
        """A new private folder under <state>/fleet/runs, named by time, action and a nonce."""
        import secrets
        from datetime import UTC, datetime

        from deployer.adapters.data_files import state_dir

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = state_dir() / "fleet" / "runs" / f"{stamp}-{action}-{secrets.token_hex(3)}"
        path.mkdir(parents=True, mode=0o700)
        return path

    def write_file(self, path: Path, text: str) -> None:
        """Write `text` to `path`, making its folders."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

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
        ident: str = IDENT,
    ) -> RunResult:
        """Run `project/<playbook>` of `private_dir` on `limit` (see run_playbook)."""
        return run_playbook(
            private_dir=private_dir, playbook=playbook, inventory=inventory, extravars=extravars,
            limit=limit, forks=forks, check=check, on_event=on_event, hf_token=hf_token,
            ident=ident,
        )  # fmt: skip

    def replay_command(
        self, private_dir: Path, playbook: str, inventory: Path, check: bool, limit: list[str]
    ) -> str:
        """The command that replays the run."""
        return replay_command(private_dir, playbook, inventory, check, limit)
