"""`deployer fleet` with default settings on hosts that reach no registry and no Hub: four
network-namespace hosts (tests/integration/netnskit.py), each its own Docker engine holding no
image at all. The runtime image and the weights arrive from this machine; a host without
docker compose and a host whose root is a tiny disk each fail alone, in one line; a rerun
ships nothing twice; down --purge leaves engines and folders clean, and a deploy after it
ships the weights again and nothing else. And a Hub model: the
controller pulls it once from a Hub-compatible server the hosts cannot reach, and ships it.

A rerun and a down reach the hosts again over fresh SSH sessions: each namespace host's sshd
logs to a file (tests/integration/sshkit.py), since a log pipe nobody read once filled up and
held every later session half set up, for as long as the test ran."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.adapters.docker_engine import DockerEngine
from tests.integration.hubserver import LoopbackHub
from tests.integration.netnskit import NetnsHost, netns_fleet
from tests.integration.test_fleet import _by_host, _fleet

pytest.importorskip("ansible_runner", reason="ansible-runner is not installed ('.[fleet]')")
pytestmark = pytest.mark.docker

PORT = 8080
DEMO_PARTS = 2  # 253 MB in parts of 128 MiB


@pytest.fixture
def bare_hosts(engine: DockerEngine, runtime_image: str) -> Iterator[list[NetnsHost]]:
    """Four namespace hosts with empty engines; the third has no docker-compose on its PATH."""
    yield from netns_fleet(engine, runtime_image, 4, load_image=False,
                           without={2: ("docker-compose",)})  # fmt: skip


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    """A 64 MiB tmpfs: too small for the demo weights."""
    where = Path(tempfile.mkdtemp(prefix="dpl-tiny-", dir="/tmp"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    where.chmod(0o755)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)
        where.rmdir()


def _inventory(path: Path, hosts: dict[str, dict[str, Any]]) -> Path:
    # Default settings: no image named, profile detected, the demo model.
    inv = {"all": {"vars": {"ansible_python_interpreter": sys.executable,
                            "deployer_model": "demo"}, "hosts": hosts}}  # fmt: skip
    path.write_text(yaml.safe_dump(inv))
    return path


def _state(h: NetnsHost) -> tuple[set[str], set[str], set[str]]:
    c = h.client()
    return (
        {x.name for x in c.containers.list(all=True)},
        {n.name for n in c.networks.list()} - {"bridge", "host", "none"},
        {v.name for v in c.volumes.list()},
    )


def test_default_fleet_deploy_ships_image_and_weights_to_air_gapped_hosts(
    bare_hosts: list[NetnsHost], tiny_disk: Path, host_root: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.delenv("DEPLOYER_IMAGE_SOURCE", raising=False)
    roots = {h.name: f"{host_root}/{h.name}" for h in bare_hosts}
    roots["ns4"] = f"{tiny_disk}/deployer"
    inv = _inventory(tmp_path / "fleet.yml", {
        h.name: {**h.inventory_vars(), "deployer_port": PORT, "deployer_root": roots[h.name]}
        for h in bare_hosts
    })  # fmt: skip
    good = [h for h in bare_hosts if h.name in ("ns1", "ns2")]
    assert all(not h.client().images.list() for h in bare_hosts)  # nothing to start from
    try:
        code, out, _ = _fleet("deploy", "-i", str(inv))
        hosts = _by_host(out)
        assert code == 1 and out["ok"] is False
        for h in good:
            row = hosts[h.name]
            assert row["result"] == "deployed", row
            assert row["transfers"]["image"] == "ship"
            assert row["transfers"]["parts_sent"] == 1 + DEMO_PARTS
            assert row["preflight"]["weights"] == {
                f"{roots[h.name]}/models/gemma-3-270m-q4_k_m.gguf": "ship"
            }
            assert h.http_status(f"http://127.0.0.1:{PORT}/health") == 200
            assert _state(h)[0] == {f"demo-{h.name}"}
        # Each failing host fails alone, in one line that says what to do.
        assert hosts["ns3"]["result"] == "failed" and hosts["ns3"]["step"] == "preflight"
        assert hosts["ns3"]["reason"] == (
            "docker compose not found; install docker-compose-plugin (or docker-compose)"
        )
        assert hosts["ns4"]["result"] == "failed"
        assert hosts["ns4"]["reason"].startswith("not enough disk for the weights (needs ")
        assert f"in {tiny_disk}; " in hosts["ns4"]["reason"]
        assert not any(tiny_disk.iterdir())  # stopped before anything changed
        assert all(not h.client().images.list() for h in bare_hosts[2:])

        # Rerun: healthy hosts are left alone and nothing is sent again.
        code, again, _ = _fleet("deploy", "-i", str(inv))
        for h in good:
            row = _by_host(again)[h.name]
            assert row["result"] == "unchanged" and row["transfers"]["parts_sent"] == 0, (
                row["result"],
                row.get("step"),
                row.get("reason"),
                row.get("detail"),
            )

    finally:
        _, down, _ = _fleet("down", "-i", str(inv), "--purge")
    ended = {host: row["result"] for host, row in _by_host(down).items()}
    assert all(ended.get(h.name) == "removed" for h in good), ended
    for h in good:
        assert _state(h) == (set(), set(), set()), _state(h)
        # Deployment folder, weights, marks, parts: all gone (the empty models folder stays).
        left = [p for p in Path(roots[h.name]).rglob("*") if not p.is_dir()]
        assert not left, left

    # Deployed again after down: the image stayed on the hosts, the purged weights go again.
    try:
        code, back, _ = _fleet("deploy", "-i", str(inv))
        for h in good:
            row = _by_host(back)[h.name]
            assert row["result"] == "deployed", (row["result"], row.get("step"), row.get("reason"))
            assert row["transfers"]["image"] == "present"
            assert row["transfers"]["parts_sent"] == DEMO_PARTS
            assert h.http_status(f"http://127.0.0.1:{PORT}/health") == 200
    finally:
        _, down, _ = _fleet("down", "-i", str(inv), "--purge")
    assert all(_by_host(down).get(h.name, {}).get("result") == "removed" for h in good), down


@pytest.fixture
def two_bare_hosts(engine: DockerEngine, runtime_image: str) -> Iterator[list[NetnsHost]]:
    """Two namespace hosts with empty engines."""
    yield from netns_fleet(engine, runtime_image, 2, load_image=False)


def test_hub_weights_reach_air_gapped_hosts_through_the_controller(
    two_bare_hosts: list[NetnsHost], hub: LoopbackHub, demo_model: Path, host_root: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # The model is a Hub repo (a Hub-compatible server on this machine's loopback, which the
    # namespace hosts cannot reach): the controller pulls it once, verified, and ships it.
    monkeypatch.delenv("DEPLOYER_IMAGE_SOURCE", raising=False)
    name = "tiny-Q4_K_M.gguf"
    hub.add_repo("acme/tiny-GGUF", {name: demo_model})
    roots = {h.name: f"{host_root}/{h.name}" for h in two_bare_hosts}
    hosts = {h.name: {**h.inventory_vars(), "deployer_port": PORT, "deployer_root": roots[h.name]}
             for h in two_bare_hosts}  # fmt: skip
    inv = {
        "all": {
            "vars": {
                "ansible_python_interpreter": sys.executable,
                "deployer_model": "hf://acme/tiny-GGUF:Q4_K_M",
            },
            "hosts": hosts,
        }
    }
    path = tmp_path / "fleet.yml"
    path.write_text(yaml.safe_dump(inv))  # fmt: skip
    try:
        code, out, err = _fleet("deploy", "-i", str(path))
        assert code == 0 and out["ok"] is True, (out, err)
        for h in two_bare_hosts:
            row = _by_host(out)[h.name]
            assert row["result"] == "deployed", row
            dest = f"{roots[h.name]}/models/acme--tiny-GGUF/{name}"  # one folder per repo
            assert row["preflight"]["weights"] == {dest: "ship"}
            assert row["transfers"]["parts_sent"] == 1 + DEMO_PARTS  # the image, the weights
            assert h.http_status(f"http://127.0.0.1:{PORT}/health") == 200
            assert Path(dest).stat().st_size == demo_model.stat().st_size
        # Pulled from the Hub once for both hosts (plus the plan's header read by range
        # requests): the controller's cache serves the rest.
        size = demo_model.stat().st_size
        assert size <= hub.served("acme/tiny-GGUF", name) < 2 * size
    finally:
        _, down, _ = _fleet("down", "-i", str(path), "--purge")
    ended = {host: row["result"] for host, row in _by_host(down).items()}
    for h in two_bare_hosts:
        assert ended.get(h.name) in ("removed", "already-gone"), ended
        assert _state(h) == (set(), set(), set()), _state(h)
