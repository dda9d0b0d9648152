"""A hostile inventory, file name or Hub listing against the real ansible-runner: nothing is
ever evaluated as a template, no path leaves its folder, and the Hub token is in no file.

The loader's every rule is tested on its own in tests/unit/test_fleet_inventory.py; here a few
real runs prove each guard holds alone: refusal at the inventory (every command), `!unsafe`
playbook variables (even for values no check refused), and the token kept out of the run folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from deployer.core.fleet.hosts import render_playbook

pytest.importorskip("ansible_runner", reason="ansible-runner is not installed ('.[fleet]')")

CLI = [sys.executable, "-c", "from deployer.cli.app import main; main()", "fleet"]
SENTINEL = "SENTINEL"
TOKEN = "hf_SENTINELtoken0123456789abcdef"
# Relative: it lands in whatever folder Ansible runs in (the run's project/ folder).
LOOKUP = "{{ lookup('pipe','touch " + SENTINEL + "') }}"
COMMANDS = [["plan"], ["deploy", "--check"], ["status"], ["down", "--purge"]]


def _inventory(path: Path, hosts: dict[str, dict[str, Any]], **extra: Any) -> Path:
    inv = {"all": {"vars": {"ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                            "deployer_model": "demo", "deployer_profile": "cpu-x86-2c-8gb",
                            **extra},
                   "hosts": hosts}}  # fmt: skip
    path.write_text(yaml.safe_dump(inv))
    return path


def _fleet(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, **(env or {})})  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _sentinels(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob(SENTINEL)]


def _files_with(text: str, root: Path) -> list[Path]:
    return [f for f in root.rglob("*") if f.is_file() and text.encode() in f.read_bytes()]


def _runs(tmp_path: Path) -> Path:
    return tmp_path / "state" / "fleet" / "runs"  # DEPLOYER_STATE_DIR of tests/conftest.py


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_template_syntax_in_the_inventory_is_refused_by_every_command(
    command: list[str], tmp_path: Path
) -> None:
    inv = _inventory(tmp_path / "fleet.yml", {"node1": {"deployer_root": f"{tmp_path}/root",
                                                         "deployer_quant": LOOKUP}})  # fmt: skip
    proc = _fleet(tmp_path, *command, "-i", str(inv))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: inventory host 'node1': deployer_quant")
    assert proc.stderr.count("\n") == 1 and "template syntax" in proc.stderr
    assert not _sentinels(tmp_path) and not _runs(tmp_path).exists()  # Ansible never ran


def test_down_never_removes_a_folder_outside_the_root(tmp_path: Path) -> None:
    victim = tmp_path / "victimdir"
    (victim / "keep").mkdir(parents=True)
    # A model that does not fit: its name reaches status and down without the renderer's check.
    inv = _inventory(tmp_path / "fleet.yml", {"node1": {
        "deployer_root": f"{tmp_path}/root", "deployer_name": "../victimdir",
        "deployer_model": "llama-3.1-70b-instruct"}})  # fmt: skip
    proc = _fleet(tmp_path, "down", "-i", str(inv))
    assert proc.returncode == 2 and "deployer_name '../victimdir'" in proc.stderr
    assert (victim / "keep").is_dir()


def test_status_never_writes_outside_its_run_folder(tmp_path: Path) -> None:
    inv = tmp_path / "fleet.yml"
    inv.write_text(json.dumps({"all": {"hosts": {"../../x/h": {
        "ansible_connection": "local", "deployer_model": "demo",
        "deployer_profile": "cpu-x86-2c-8gb"}}}}))  # fmt: skip
    before = set(tmp_path.rglob("*"))
    proc = _fleet(tmp_path, "status", "-i", str(inv))
    assert proc.returncode == 2 and "host name '../../x/h'" in proc.stderr
    assert set(tmp_path.rglob("*")) == before and not (tmp_path.parent / "x").exists()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("all:\n  hosts:\n    h1: {deployer_port: " + "9" * 5000 + "}\n", "4300 digits"),
        ("all:\n  hosts: [\n", "YAML parsing failed"),
    ],
    ids=["huge-number", "broken-yaml"],
)
def test_an_inventory_ansible_cannot_parse_is_one_line(
    text: str, words: str, tmp_path: Path
) -> None:
    """Ansible only warns and lists nothing: said as the file's problem, not 'no host'."""
    from deployer.adapters.ansible import InventoryUnreadable, read_inventory

    inv = tmp_path / "fleet.yml"
    inv.write_text(text)
    with pytest.raises(InventoryUnreadable) as info:
        read_inventory(inv)
    message = info.value.message()
    assert words in message and "\n" not in message and "ansible-inventory -i" in message


def _literal_playbook() -> str:
    """Every way a playbook of ours uses a variable: command arguments, module paths, file
    content, loops, set_fact, conditions, a lookup of a path, and the report."""
    return yaml.safe_dump([{
        "hosts": "all", "gather_facts": False,
        "vars": {"d": "{{ deployer_fleet[inventory_hostname] }}"},
        "tasks": [
            {"ansible.builtin.set_fact": {"compose": "echo -p {{ d.name }} -f {{ d.dir }}/x"}},
            {"ansible.builtin.command": "{{ compose }} up", "register": "cmd"},
            {"ansible.builtin.copy": {"content": "{{ d.name }}\n", "dest": "{{ d.out }}/name"}},
            {"ansible.builtin.file": {"path": "{{ item.dest }}", "state": "touch"},
             "loop": "{{ d.weights | selectattr('src', 'defined') | list }}"},
            {"ansible.builtin.stat": {"path": "{{ d.dir }}"}, "when": "d.name != ''",
             "register": "st"},
            {"ansible.builtin.debug": {"msg": {"deployer": {
                "result": "literal", "cmd": "{{ cmd.stdout }}",
                "read": "{{ lookup('file', d.out + '/name') }}", "alias": "{{ d.smoke_model }}"}}}},
        ],
    }])  # fmt: skip


def test_playbook_variables_reach_ansible_as_literal_text(tmp_path: Path) -> None:
    """No check refused these values (they bypass the loader): `!unsafe` alone keeps them text."""
    from deployer.adapters.ansible import run_playbook
    from deployer.core.fleet.hosts import outcomes_from_events

    run_dir, out = tmp_path / "run", tmp_path / "out"
    (run_dir / "project").mkdir(parents=True)
    out.mkdir()
    (run_dir / "project" / "literal.yml").write_text(_literal_playbook())
    inv = _inventory(tmp_path / "fleet.yml", {"h1": {}})
    hostile = {
        "name": f"n{LOOKUP}",
        "dir": f"{tmp_path}/d{LOOKUP}",
        "out": str(out),
        "smoke_model": "{% for x in [1] %}" + LOOKUP + "{% endfor %}",
        "weights": [{"dest": f"{out}/m{LOOKUP}-Q4_K_M.gguf", "src": f"/x/{LOOKUP}"}],
    }
    res = run_playbook(private_dir=run_dir, playbook="literal.yml", inventory=inv,
                       extravars={"deployer_fleet": {"h1": hostile}}, limit=["h1"])  # fmt: skip
    report = outcomes_from_events(res.events, ["h1"], default="failed")["h1"]
    assert res.status == "successful" and report.result == "literal", report
    assert not _sentinels(tmp_path)
    assert (
        report.details["read"] == hostile["name"]
        and report.details["alias"] == hostile["smoke_model"]
    )
    # The command got the text (split into words, quotes removed), not the lookup's value.
    assert "n{{ lookup(pipe,touch SENTINEL) }}" in report.details["cmd"]
    assert (out / f"m{LOOKUP}-Q4_K_M.gguf").is_file()
    assert "!unsafe" in (run_dir / "env" / "extravars").read_text()


class _Weights(BaseHTTPRequestHandler):
    """Serves one file and records the Authorization header of every request."""

    body = b"GGUF" + bytes(1020)
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization", ""))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def weights_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Weights)
    _Weights.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _download_only() -> str:
    """The deploy playbook's own download task (the only one that uses the token), alone."""
    play = yaml.safe_load(render_playbook("deploy"))[0]
    block = next(t for t in play["tasks"] if "block" in t)["block"]
    task = next(t for t in block if "get_url" in str(t))
    return yaml.safe_dump([{**{k: play[k] for k in ("hosts", "gather_facts", "vars")},
                            "tasks": [task]}])  # fmt: skip


def test_the_hub_token_reaches_the_download_and_no_file_of_the_run(
    tmp_path: Path, weights_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployer.adapters.ansible import run_playbook

    monkeypatch.setenv("HF_TOKEN", TOKEN)  # what Ansible must not inherit
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))  # where the token file goes
    run_dir = tmp_path / "run"
    (run_dir / "project").mkdir(parents=True)
    (run_dir / "project" / "deploy.yml").write_text(_download_only())
    dest = tmp_path / "models" / "m.gguf"
    weight = {"dest": str(dest), "size": len(_Weights.body), "url": f"{weights_server}/m.gguf",
              "sha256": hashlib.sha256(_Weights.body).hexdigest()}  # fmt: skip
    inv = _inventory(tmp_path / "fleet.yml", {"h1": {}})
    dest.parent.mkdir()
    res = run_playbook(private_dir=run_dir, playbook="deploy.yml", inventory=inv,
                       extravars={"deployer_fleet": {"h1": {"weights": [weight], "download": [weight]}}},
                       limit=["h1"], hf_token=TOKEN)  # fmt: skip
    assert res.status == "successful" and dest.read_bytes() == _Weights.body
    assert _Weights.seen == [f"Bearer {TOKEN}"]
    assert not _files_with(TOKEN, run_dir)
    assert not list(private_tmp.iterdir())  # the token file is gone with the run
    command = json.loads((run_dir / "artifacts" / "run" / "command").read_text())
    assert "HF_TOKEN" not in command["env"] and set(command["env"].values()) == {"(value not kept)"}


def test_fleet_commands_leave_no_token_in_the_run_folder(tmp_path: Path) -> None:
    """plan, deploy --check, status, down: the token is in no file any run left, and an
    inventory variable that is not ours, holding a lookup, is never evaluated (Ansible
    templates a variable only where a playbook uses it)."""
    root = tmp_path / "root"
    inv = _inventory(tmp_path / "fleet.yml", {"t1": {
        "deployer_root": str(root), "deployer_port": 18931, "site_note": LOOKUP}})  # fmt: skip
    for command in COMMANDS:
        proc = _fleet(tmp_path, *command, "-i", str(inv), "--json", env={"HF_TOKEN": TOKEN})
        assert proc.returncode in (0, 1), proc.stderr  # 1: no Docker here for deploy --check
        assert TOKEN not in proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["hosts"][0]["host"] == "t1"
    runs = list(_runs(tmp_path).iterdir())
    kinds = sorted(r.name.split("-")[1] for r in runs)
    assert kinds == ["deploy", "down", "status"]
    assert all((r / "artifacts" / "run" / "command").is_file() for r in runs)
    assert not _files_with(TOKEN, _runs(tmp_path))
    assert not _sentinels(tmp_path)
    assert not root.exists()  # check mode, status and down of nothing created nothing
