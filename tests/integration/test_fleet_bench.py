"""`deployer fleet bench` over real SSH tunnels: two network-namespace hosts (netnskit), each
serving the demo on its own 127.0.0.1:8080, measured from here through `ssh -L` with strict host
key checking (a known_hosts file, as Ansible uses it); one host needs its API key, read over
ssh into memory. A host whose port is closed and one whose host key does not match fail alone,
in one line; the total is the sum of the hosts; no tunnel is left open."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.loopback import free_port
from tests.integration.netnskit import NetnsHost
from tests.integration.test_fleet import _by_host, _fleet, _inventory

pytest.importorskip("ansible_runner", reason="ansible-runner is not installed ('.[fleet]')")
pytestmark = pytest.mark.docker

PORT = 8080
CLI = [sys.executable, "-c", "from deployer.cli.app import main; main()", "fleet"]


def _known_hosts(path: Path, hosts: list[NetnsHost]) -> Path:
    """The hosts' real keys (sshkit keeps each host key beside the client key)."""
    lines = [f"{h.ssh.address} {(h.ssh.key.parent / 'host_key.pub').read_text().strip()}"
             for h in hosts]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def _ssh_vars(h: NetnsHost, known_hosts: Path) -> dict[str, object]:
    # Strict host key checking for Ansible too: the inventory names the known_hosts file.
    return {**h.inventory_vars(),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts}"}  # fmt: skip


def _tunnels_open() -> list[str]:
    """Command lines of ssh processes holding a forward (ours end with the host address)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] == b"ssh" and b"-L" in argv:
            out.append(b" ".join(argv).decode(errors="replace"))
    return out


def _bench(inv: Path) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [*CLI, "bench", "-i", str(inv), "--json", "--concurrency", "1,2", "--requests", "2",
         "--prompt-tokens", "32", "--output-tokens", "16", "--timeout", "300",
         # Two cores shared with the other tests: a target any working server meets, so the
         # figures of both levels count whatever the load (the target has its unit tests).
         "--max-ttft-s", "60", "--min-stream-tokens-per-s", "0.1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stdout + proc.stderr


def test_fleet_bench_measures_each_host_through_a_tunnel_and_sums(
    netns_hosts: list[NetnsHost], runtime_image: str, host_root: Path, tmp_path: Path
) -> None:
    first, second = netns_hosts
    known = _known_hosts(tmp_path / "known_hosts", netns_hosts)
    hosts = {
        h.name: {**_ssh_vars(h, known), "deployer_port": PORT,
                 "deployer_root": f"{host_root}/{h.name}"}
        for h in netns_hosts
    }  # fmt: skip
    hosts[first.name]["deployer_expose"] = True  # an API key made on the host
    inv = _inventory(tmp_path / "fleet.yml", runtime_image, hosts)
    # For the bench only: a host whose ssh port is closed, and one that claims to be the second
    # host but whose known key is another one (the first host's).
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"{second.ssh.address} "
                     f"{(first.ssh.key.parent / 'host_key.pub').read_text().strip()}\n")  # fmt: skip
    extra = {
        "ghost": {**_ssh_vars(first, known), "ansible_host": "127.0.0.1",
                  "ansible_port": free_port(), "deployer_port": PORT},
        "impostor": {**_ssh_vars(second, wrong), "deployer_port": PORT,
                     "deployer_root": f"{host_root}/{second.name}"},
    }  # fmt: skip
    bench_inv = tmp_path / "bench.yml"
    doc = yaml.safe_load(inv.read_text())
    doc["all"]["hosts"].update(extra)
    bench_inv.write_text(yaml.safe_dump(doc))
    try:
        code, out, err = _fleet("deploy", "-i", str(inv))
        assert code == 0, (err, out["hosts"])
        # The first host's server refuses requests without its key (reached from inside).
        assert first.http_status(f"http://127.0.0.1:{PORT}/v1/models") == 401

        code, out, text = _bench(bench_inv)
        assert code == 1 and out["ok"] is False, text
        rows = _by_host(out)
        for h in netns_hosts:
            row = rows[h.name]
            assert row["result"] == "measured", (row["reason"], row["bench"])
            assert row["via"] == f"ssh {h.ssh.user}@{h.ssh.address}:22"
            bench = row["bench"]
            assert [lv["concurrency"] for lv in bench["levels"]] == [1, 2]
            assert (
                bench["errors"] == {} and bench["target"]["endpoint"] == f"http://127.0.0.1:{PORT}"
            )
            cap = row["capacity"]
            assert cap["aggregate_tokens_per_s"] > 0 and cap["requests_per_s"] > 0
            assert cap == {k: bench["best"][k] for k in ("concurrency", "aggregate_tokens_per_s",
                                                         "requests_per_s")} | {
                "requests_per_day": bench["best"]["costs"]["requests_per_day"]}  # fmt: skip
        assert rows["ghost"]["result"] == "failed" and rows["ghost"]["capacity"] is None
        assert rows["ghost"]["reason"].startswith("ssh to ghost: "), rows["ghost"]
        assert rows["impostor"]["result"] == "failed"
        assert "Host key verification failed" in rows["impostor"]["reason"], rows["impostor"]
        measured = [rows[h.name]["capacity"] for h in netns_hosts]
        total = out["total"]
        for k in ("aggregate_tokens_per_s", "requests_per_s", "requests_per_day"):
            assert total[k] == pytest.approx(sum(c[k] for c in measured), abs=1e-6)
        assert (total["hosts"], total["measured"], total["failed"]) == (4, 2, 2)
        # The key was used (no 401 above) and never shown.
        name = rows[first.name]["name"]
        key = Path(f"{host_root}/{first.name}/{name}/api_key").read_text().strip()
        assert len(key) >= 32 and key not in text
        assert not _tunnels_open()
    finally:
        _, down, _ = _fleet("down", "-i", str(inv))
    for h in netns_hosts:
        assert _by_host(down)[h.name]["result"] == "removed"
