"""Real sshd servers for fleet tests over SSH (key auth, throwaway keys and config).

`start_sshd` runs one on 127.0.0.1 (the `ssh_host` fixture in conftest.py) or inside a network namespace (see
netnskit), with environment variables it hands to every session (`SetEnv`).
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshHost:
    """Where to reach a test sshd and with which key."""

    port: int
    user: str
    key: Path
    address: str = "127.0.0.1"

    def inventory_vars(self) -> dict[str, object]:
        return {
            "ansible_connection": "ssh",
            "ansible_host": self.address,
            "ansible_port": self.port,
            "ansible_user": self.user,
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        }


def require_sshd() -> None:
    if not SSHD.exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")


def start_sshd(
    d: Path,
    *,
    address: str,
    port: int,
    prefix: Sequence[str] = (),
    set_env: dict[str, str] | None = None,
    reachable: bool = True,
) -> tuple[subprocess.Popen[str], SshHost]:
    """sshd in the foreground on address:port (run under `prefix`, e.g. nsenter), accepting one
    generated key; waits until it listens when `reachable` from here."""
    d.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        if not (d / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                           check=True)  # fmt: skip
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    env_line = ""
    if set_env:
        env_line = "SetEnv " + " ".join(f"{k}={v}" for k, v in set_env.items()) + "\n"
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress {address}\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nSubsystem sftp internal-sftp\n"
        + env_line
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation dir sshd insists on
    # Its log goes to a file: a pipe nobody reads fills after a few hundred sessions (64 KiB), and
    # sshd then blocks writing "Accepted publickey" with the client's session half set up, which
    # is what the "SSH stall" of the namespace-host fleet tests was.
    with (d / "sshd.log").open("a") as log:
        proc = subprocess.Popen([*prefix, str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")],
                                stderr=log, text=True)  # fmt: skip
    host = SshHost(port=port, user=getpass.getuser(), key=d / "client_key", address=address)
    end = time.monotonic() + 15
    while reachable and time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(
                f"sshd did not start: {(d / 'sshd.log').read_text(errors='replace')[-2000:]}"
            )
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((address, port)) == 0:
                break
        time.sleep(0.1)
    return proc, host


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
