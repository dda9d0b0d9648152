"""`deployer fleet` over SSH to hosts that are network namespaces, each with its own Docker
engine (tests/integration/netnskit.py): separate networks, separate engines, one SSH hop each.

Both hosts serve on the same port 8080, which only separate hosts can; each server answers
inside its own namespace and nowhere else; status and down reach them the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.netnskit import NetnsHost
from tests.integration.test_fleet import _by_host, _fleet, _inventory

pytest.importorskip("ansible_runner", reason="ansible-runner is not installed ('.[fleet]')")
pytestmark = pytest.mark.docker

PORT = 8080


def _containers(host: NetnsHost) -> set[str]:
    return {c.name for c in host.client().containers.list(all=True)}


def test_fleet_on_namespace_hosts_over_ssh(
    netns_hosts: list[NetnsHost], runtime_image: str, host_root: Path, tmp_path: Path
) -> None:
    inv = _inventory(tmp_path / "fleet.yml", runtime_image, {
        h.name: {**h.inventory_vars(), "deployer_port": PORT,
                 "deployer_root": f"{host_root}/{h.name}", "deployer_profile": "detect"}
        for h in netns_hosts
    })  # fmt: skip
    try:
        code, out, err = _fleet("deploy", "-i", str(inv))
        assert code == 0, (err, out["hosts"])
        hosts = _by_host(out)
        for h in netns_hosts:
            assert hosts[h.name]["result"] == "deployed", hosts[h.name]
            assert hosts[h.name]["detected"]
            # The server is in this host's engine and answers in this host's network only.
            assert _containers(h) == {f"demo-{h.name}"}
            assert h.http_status(f"http://127.0.0.1:{PORT}/health") == 200
        first, second = netns_hosts
        assert (
            first.http_status(f"http://{second.ssh.address}:{PORT}/health") == 0
        )  # 127.0.0.1 only

        code, out, _ = _fleet("status", "-i", str(inv))
        for h in netns_hosts:
            status = _by_host(out)[h.name]
            assert status["result"] == "running" and status["health"] == "200", status
    finally:
        _, down, _ = _fleet("down", "-i", str(inv))
    for h in netns_hosts:
        assert _by_host(down)[h.name]["result"] == "removed"
        assert _containers(h) == set()
