"""How the controller reaches one fleet host's server: the SSH settings of the host's Ansible
connection, validated as hostile input, and the `ssh` argument lists built from them.

A fleet host's server listens on that host's own 127.0.0.1, so `deployer fleet bench` reaches it
through an SSH local port forward made with the same user, key, port and known-hosts file that
Ansible uses. Only those settings are taken from the inventory; every other SSH argument is
fixed here. Strict host key checking is always on (an inventory that turns it off for Ansible
does not turn it off here), and nothing reaches a shell: the adapter runs these lists as argv.
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployer.core.errors import DeployerError, InvalidRequest
from deployer.core.untrusted import UntrustedValue, check_line, shown

# Ansible's names for each setting, the first found wins (the later ones are older aliases).
HOST_KEYS = ("ansible_host", "ansible_ssh_host")
PORT_KEYS = ("ansible_port", "ansible_ssh_port")
USER_KEYS = ("ansible_user", "ansible_ssh_user")
KEY_KEYS = ("ansible_ssh_private_key_file", "ansible_private_key_file")
ARGS_KEYS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
SSH_CONNECTIONS = {"ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh",
                   "ansible.builtin.paramiko_ssh"}  # fmt: skip
LOCAL_CONNECTIONS = {"local", "ansible.builtin.local"}

# A DNS name (labels of letters, digits, '-' and '_', never starting with '-') or an IP address.
NAME_RE = re.compile(
    r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$"
)
# A login name: what useradd accepts, never a leading '-' (it would read as an option).
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
# A file path handed to ssh: no spaces or quotes (ssh splits -o values on them), no '%'
# (ssh expands %-tokens in these paths), no leading '-'; '~' only as a leading '~/'.
PATH_RE = re.compile(r"^(?:~/|/)?[A-Za-z0-9_.@+=,/-]{1,1024}$")
KNOWN_HOSTS_OPTION = "userknownhostsfile"
OPTION_RE = re.compile(r"([A-Za-z]+)\s*(?:=\s*|\s+)(.*)", re.DOTALL)  # Name=value, Name value
FIX = "Fix the host's connection variables in the inventory (see docs/fleet.md)."
# Fixed for every ssh this module builds: never asks (BatchMode), checks the host key against
# known_hosts (StrictHostKeyChecking=yes), uses no shared master connection of the user's (its
# forwards and settings are not ours), forwards no agent or display, runs no local command.
COMMON_OPTIONS = (
    "BatchMode=yes", "StrictHostKeyChecking=yes", "ControlMaster=no", "ControlPath=none",
    "ForwardAgent=no", "ForwardX11=no", "PermitLocalCommand=no", "ConnectTimeout=15",
    "ServerAliveInterval=5", "ServerAliveCountMax=3", "LogLevel=ERROR",
)  # fmt: skip
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class SshRoute:
    """How to reach one inventory host: this machine (local), or ssh with these settings;
    None where the inventory leaves a setting to ssh's own defaults, as Ansible does."""

    host: str  # the inventory name (already validated by inventory.check_host)
    local: bool = False
    address: str = ""
    port: int | None = None
    user: str | None = None
    key_file: str | None = None
    known_hosts: tuple[str, ...] = ()

    def describe(self) -> str:
        """Where the host is reached, for a person ('local', 'ssh user@addr:port')."""
        if self.local:
            return "local"
        who = f"{self.user}@" if self.user else ""
        return f"ssh {who}{self.address}" + (f":{self.port}" if self.port else "")


def _source(host: str) -> str:
    return f"inventory host {shown(host)}"


def _first(hv: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    for key in keys:
        if hv.get(key) is not None:
            return key, hv[key]
    return keys[0], None


def _text(host: str, key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UntrustedValue(_source(host), key, type(value).__name__, "is not text", FIX)
    return check_line(str(value) if isinstance(value, int) else value, _source(host), key,
                      max_len=1024)  # fmt: skip


def check_address(host: str, key: str, value: Any) -> str:
    """An IPv4 or IPv6 address, or a DNS name; never something ssh could read as an option."""
    text = _text(host, key, value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if len(text) > 253 or not NAME_RE.fullmatch(text):
        raise UntrustedValue(_source(host), key, text, "is not a host name or IP address", FIX)
    return text


def check_port(host: str, key: str, value: Any) -> int:
    """A TCP port, 1..65535 (a number, or its digits as text)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UntrustedValue(_source(host), key, type(value).__name__, "is not a port", FIX)
    text = str(value).strip() if isinstance(value, str) else None
    if text is not None and not re.fullmatch(r"[0-9]{1,5}", text):
        raise UntrustedValue(_source(host), key, text, "is not a port number", FIX)
    port = int(text) if text is not None else int(value)
    if not 1 <= port <= 65535:
        shown_port = str(port) if abs(port) < 10**12 else "a huge number"
        raise UntrustedValue(_source(host), key, shown_port, "is not between 1 and 65535", FIX)
    return port


def check_user(host: str, key: str, value: Any) -> str:
    """A login name: letters, digits, '_', '.', '-', not starting with '-' or '.'."""
    text = _text(host, key, value)
    if not USER_RE.fullmatch(text):
        raise UntrustedValue(_source(host), key, text, f"does not match {USER_RE.pattern}", FIX)
    return text


def check_path(host: str, key: str, value: Any) -> str:
    """A file path ssh takes as is: see PATH_RE."""
    text = _text(host, key, value)
    if not PATH_RE.fullmatch(text) or text.startswith("-"):
        raise UntrustedValue(
            _source(host), key, text,
            "is not a plain path (letters, digits, '_', '.', '@', '+', '=', ',', '-', '/'; "
            "no spaces, quotes or '%')", FIX,
        )  # fmt: skip
    return text


def known_hosts_files(host: str, key: str, value: Any) -> tuple[str, ...]:
    """The UserKnownHostsFile given in Ansible's extra ssh arguments (`-o Name=VALUE`, `-oName
    VALUE`, ...); every other argument there is Ansible's business and not taken."""
    text = _text(host, key, value)
    try:
        words = shlex.split(text)
    except ValueError:
        raise UntrustedValue(
            _source(host), key, text, "is not a list of ssh arguments", FIX
        ) from None
    options: list[str] = []
    for i, word in enumerate(words):
        if word == "-o" and i + 1 < len(words):
            options.append(words[i + 1])
        elif word.startswith("-o") and len(word) > 2:
            options.append(word[2:])
    files: list[str] = []
    for opt in options:
        m = OPTION_RE.fullmatch(opt.strip())
        if m is not None and m.group(1).lower() == KNOWN_HOSTS_OPTION:
            files += [check_path(host, f"{key} UserKnownHostsFile", f) for f in m.group(2).split()]
    return tuple(files)


def route_from_vars(host: str, hv: Mapping[str, Any]) -> SshRoute:
    """One host's route from its resolved Ansible variables, each value checked."""
    _, conn = _first(hv, ("ansible_connection",))
    conn_text = "ssh" if conn is None else _text(host, "ansible_connection", conn)
    if conn_text in LOCAL_CONNECTIONS:
        return SshRoute(host=host, local=True)
    if conn_text not in SSH_CONNECTIONS:
        raise InvalidRequest(
            f"inventory host {shown(host)}: ansible_connection {shown(conn_text)} is not ssh "
            "or local; fleet bench reaches servers through ssh",
        )
    key, value = _first(hv, HOST_KEYS)
    address = check_address(host, key, host if value is None else value)
    pkey, port = _first(hv, PORT_KEYS)
    ukey, user = _first(hv, USER_KEYS)
    kkey, key_file = _first(hv, KEY_KEYS)
    known: tuple[str, ...] = ()
    for akey in ARGS_KEYS:
        if hv.get(akey) is not None:
            known += known_hosts_files(host, akey, hv[akey])
    return SshRoute(
        host=host, address=address,
        port=None if port is None else check_port(host, pkey, port),
        user=None if user is None else check_user(host, ukey, user),
        key_file=None if key_file is None else check_path(host, kkey, key_file),
        known_hosts=known,
    )  # fmt: skip


def routes_from_inventory(
    listing: Mapping[str, Any], hosts: list[str]
) -> dict[str, SshRoute | str]:
    """Each host's route, or the one-line reason it has none (never fatal to the others)."""
    meta = listing.get("_meta") if isinstance(listing, Mapping) else None
    hostvars = meta.get("hostvars") if isinstance(meta, Mapping) else None
    out: dict[str, SshRoute | str] = {}
    for host in hosts:
        hv = hostvars.get(host) if isinstance(hostvars, Mapping) else None
        try:
            out[host] = route_from_vars(host, hv if isinstance(hv, Mapping) else {})
        except DeployerError as exc:
            out[host] = exc.message()
    return out


def _ssh_base(route: SshRoute) -> list[str]:
    """ssh with the fixed options and the host's own settings, up to (not including) `--`."""
    argv = ["ssh"]
    for opt in COMMON_OPTIONS:
        argv += ["-o", opt]
    if route.known_hosts:
        argv += ["-o", "UserKnownHostsFile=" + " ".join(route.known_hosts)]
    if route.port is not None:
        argv += ["-p", str(route.port)]
    if route.user is not None:
        argv += ["-l", route.user]
    if route.key_file is not None:
        argv += ["-i", route.key_file]
    return argv


def tunnel_argv(route: SshRoute, local_port: int, remote_port: int) -> list[str]:
    """`ssh -N -L 127.0.0.1:LOCAL:127.0.0.1:REMOTE ... -- ADDRESS`: the host's loopback port on
    this machine's loopback, and nothing else; ssh ends if the forward cannot be made."""
    for port in (local_port, remote_port):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"port {port!r} is not a TCP port")  # a caller's bug, not input
    forward = f"{LOOPBACK}:{local_port}:{LOOPBACK}:{remote_port}"
    return [*_ssh_base(route), "-N", "-L", forward, "-o", "ExitOnForwardFailure=yes",
            "--", route.address]  # fmt: skip


def read_file_argv(route: SshRoute, path: str) -> list[str]:
    """`ssh ... -- ADDRESS "cat -- 'PATH'"`: one file's bytes on stdout. ssh hands the command
    to the remote shell as one string, so the path is quoted for it (and was validated)."""
    check_line(path, "fleet bench", "remote path")
    return [*_ssh_base(route), "-T", "-o", "ClearAllForwardings=yes", "--", route.address,
            f"cat -- {shlex.quote(path)}"]  # fmt: skip
