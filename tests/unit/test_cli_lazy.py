"""The root command loads command modules on demand; its listing must match the real commands."""

from __future__ import annotations

import subprocess
import sys

import typer
from typer.testing import CliRunner

from deployer.cli.app import COMMANDS, app, load_all


def _first_line(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())


def test_every_listed_command_exists_with_the_listed_help() -> None:
    load_all()
    root = typer.main.get_group(app)
    real = {name: root.commands[name] for name in root.commands}
    assert set(real) == set(COMMANDS), "the COMMANDS table and the registered commands differ"
    for name, entry in COMMANDS.items():
        assert _first_line(real[name].help) == entry.help, name


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() + out.stderr


def test_help_lists_every_command_without_importing_them() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from deployer.cli.app import COMMANDS, app\n"
        "r = CliRunner().invoke(app, ['--help'], terminal_width=200)\n"
        "assert r.exit_code == 0, r.output\n"
        "missing = [n for n in COMMANDS if n not in r.output]\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('deployer.cli.')"
        " and m.split('.')[-1] not in ('app', 'errors'))\n"
        "heavy = sorted(m for m in ('docker', 'huggingface_hub', 'ansible_runner', 'pydantic',"
        " 'jinja2', 'gguf') if m in sys.modules)\n"
        "print(missing, loaded, heavy)\n"
    )
    assert _python(code) == "[] [] []"


def test_a_command_runs_after_loading_only_its_module() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from deployer.cli.app import app\n"
        "r = CliRunner().invoke(app, ['profiles', 'show', 'nvidia-a10g-24gb', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('deployer.cli.deploy', 'deployer.cli.fleet', 'docker',"
        " 'ansible_runner') if m in sys.modules))\n"
    )
    assert _python(code) == "[]"


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["deplyo"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_a_ctrl_c_after_the_command_finished_is_ignored_not_fatal() -> None:
    """Once a command is done, Python's shutdown restores SIGINT's default action: a Ctrl-C then
    killed a finished deploy with status -2 (seen in tests/integration/test_deploy_faults.py).
    The entry point ignores SIGINT from the moment the command returns, so the process exits
    with the command's own status."""
    code = (
        "import os, signal, sys\n"
        "from deployer.cli import app as a\n"
        "sys.argv = ['deployer', '--version']\n"
        "try:\n"
        "    a.main()\n"
        "except SystemExit as e:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    print('survived', e.code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "survived" in out.stdout
