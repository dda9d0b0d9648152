"""A fleet of hosts on one box: each host is a network namespace with its own Docker engine
and its own sshd, reached over a veth pair at its own address.

What makes them separate hosts for the fleet: every port a host publishes on 127.0.0.1 exists
only in its namespace (two hosts can both serve on 8080), its containers live in its own
engine, and Ansible reaches it only over SSH at 10.231.x.2. The filesystem is shared (the
engines keep their data apart under their own roots), and sshd hands every session the
engine's socket as DOCKER_HOST. `nsenter --net` enters the network namespace alone: `ip netns
exec` would also remount /sys and hide the cgroups dockerd needs.

Needs root, iproute2, nsenter, dockerd and sshd; the fixture skips, saying which, otherwise.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.sshkit import SshHost, require_sshd, start_sshd, stop

if TYPE_CHECKING:
    import docker

    from deployer.adapters.docker_engine import DockerEngine


@dataclass(frozen=True)
class NetnsHost:
    """One namespace host: its inventory name, namespace, SSH endpoint and engine socket."""

    name: str
    netns: str
    ssh: SshHost
    docker_host: str

    def inventory_vars(self) -> dict[str, object]:
        # No persistent control master: its connection would outlive the namespace.
        # Dead connections are noticed in seconds and retried: on a loaded box a session
        # was seen stuck for minutes ("client_loop: send disconnect: Broken pipe").
        return {**self.ssh.inventory_vars(), "ansible_ssh_retries": 3,
                "ansible_ssh_args": "-o ControlMaster=no -o ServerAliveInterval=5 "
                                    "-o ServerAliveCountMax=3"}  # fmt: skip

    def enter(self) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.netns}"]

    def http_status(self, url: str) -> int:
        """GET `url` from inside this host's network; the status code, or 0 if unreachable."""
        code = (
            "import sys, urllib.request\n"
            "try:\n"
            f"    print(urllib.request.urlopen({url!r}, timeout=5).status)\n"
            "except Exception as exc:\n"
            "    print(getattr(exc, 'code', 0))\n"
        )
        out = subprocess.run([*self.enter(), sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        return int(out.stdout.strip() or 0)

    def client(self) -> docker.DockerClient:
        import docker

        return docker.DockerClient(base_url=self.docker_host, timeout=60)


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "network-namespace hosts need root"
    for tool in ("ip", "nsenter", "dockerd"):
        if shutil.which(tool) is None:
            return f"network-namespace hosts need {tool}"
    return None


class _Host:
    def __init__(self, index: int, tag: str, base: Path) -> None:
        self.index, self.base = index, base / f"h{index}"
        self.netns = f"dpl{tag}{index}"
        self.veth = f"dv{tag}{index}"
        octet = (int(tag, 16) % 100) * 2 + index + 20
        self.gateway, self.address = f"10.231.{octet}.1", f"10.231.{octet}.2"
        self.sock = self.base / "docker.sock"
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.sshd: subprocess.Popen[str] | None = None

    def network(self) -> None:
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", f"{self.veth}p")
        _ip("link", "set", f"{self.veth}p", "netns", self.netns)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.veth)
        _ip("link", "set", self.veth, "up")
        _ip("addr", "add", f"{self.address}/24", "dev", f"{self.veth}p", netns=self.netns)
        _ip("link", "set", f"{self.veth}p", "up", netns=self.netns)
        _ip("link", "set", "lo", "up", netns=self.netns)

    def engine(self, image: bytes | None) -> None:
        import docker

        self.base.mkdir(parents=True, exist_ok=True)
        log = (self.base / "dockerd.log").open("wb")
        self.dockerd = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{self.netns}", "dockerd",
             "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "exec"),
             "-H", f"unix://{self.sock}", "--pidfile", str(self.base / "dockerd.pid")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        end = time.monotonic() + 60
        while True:
            try:
                client = docker.DockerClient(base_url=f"unix://{self.sock}", timeout=60)
                client.ping()
                break
            except Exception:
                if self.dockerd.poll() is not None or time.monotonic() > end:
                    text = (self.base / "dockerd.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"dockerd in {self.netns} did not start:\n{text}")
                time.sleep(0.2)
        if image is not None:
            client.images.load(image)

    def ssh(self, without: tuple[str, ...] = ()) -> SshHost:
        env = {"DOCKER_HOST": f"unix://{self.sock}"}
        if without:
            env["PATH"] = str(_path_without(self.base / "bin", without))
        self.sshd, host = start_sshd(
            self.base / "ssh", address=self.address, port=22,
            prefix=["nsenter", f"--net=/var/run/netns/{self.netns}"], set_env=env,
        )  # fmt: skip
        return host

    def close(self) -> None:
        if self.sshd is not None:
            stop(self.sshd)
        if self.dockerd is not None and self.dockerd.poll() is None:
            try:
                import docker

                client = docker.DockerClient(base_url=f"unix://{self.sock}", timeout=30)
                for c in client.containers.list(all=True):
                    c.remove(force=True)
                client.volumes.prune()
            except Exception:  # teardown goes on: the engine is stopped below either way
                pass
            self.dockerd.terminate()
            try:
                self.dockerd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
                self.dockerd.wait(timeout=10)
        # Whatever still runs in the namespace (sshd's per-connection children): stopped too.
        pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)


def _path_without(folder: Path, tools: tuple[str, ...]) -> Path:
    """A folder of links to every program on PATH except `tools`: a host that lacks them."""
    folder.mkdir(parents=True, exist_ok=True)
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = folder / name
            if name in tools or link.exists() or link.is_symlink():
                continue
            link.symlink_to(Path(d) / name)
    return folder


def netns_fleet(
    engine: DockerEngine, image: str, count: int, *, load_image: bool = True,
    without: dict[int, tuple[str, ...]] | None = None,
) -> Iterator[list[NetnsHost]]:  # fmt: skip
    """`count` namespace hosts, `image` loaded in each engine unless `load_image` is false;
    host i (from 0) lacks the programs `without[i]` on its PATH; all removed afterwards."""
    why = _missing()
    if why:
        pytest.skip(why)
    require_sshd()
    # named=: keeps the tag
    saved = b"".join(engine.client().images.get(image).save(named=True)) if load_image else None
    base = Path(tempfile.mkdtemp(prefix="dns-", dir="/tmp"))  # short: socket paths are limited
    tag = secrets.token_hex(2)
    hosts = [_Host(i + 1, tag, base) for i in range(count)]
    try:
        out: list[NetnsHost] = []
        for h in hosts:
            try:
                h.network()
            except subprocess.CalledProcessError as exc:
                if "Operation not permitted" in (exc.stderr or ""):
                    pytest.skip(f"network namespaces are not permitted here: {exc.stderr.strip()}")
                raise
            h.engine(saved)
            ssh = h.ssh((without or {}).get(h.index - 1, ()))
            out.append(NetnsHost(f"ns{h.index}", h.netns, ssh, f"unix://{h.sock}"))
        yield out
    finally:
        for h in hosts:
            h.close()
        shutil.rmtree(base, ignore_errors=True)
