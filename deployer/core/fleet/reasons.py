"""One line per failed host: the cause and the next step, from what Ansible reported.

Pure functions over the text of a failed task or an unreachable host (its `msg`, `stderr`,
the step it was in). The raw output stays in the run folder; this is what a person reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from deployer.core.untrusted import printable

RAW_MAX = 160

# (pattern over the lowercased text, reason). First match wins; order from specific to broad.
_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str], str], str]]] = []


def _rule(pattern: str) -> Callable[[Callable[[re.Match[str], str], str]], None]:
    def add(fn: Callable[[re.Match[str], str], str]) -> None:
        _RULES.append((re.compile(pattern), fn))

    return add


@_rule(r"permission denied \(publickey|authentication failed|host key verification failed")
def _ssh_auth(_m: re.Match[str], _t: str) -> str:
    return "SSH login refused (key or host key); check ansible_user and the SSH key for this host"


@_rule(r"missing sudo password|incorrect sudo password|sudo: a password is required")
def _sudo(_m: re.Match[str], _t: str) -> str:
    return "sudo needs a password; set ansible_become_password or allow passwordless sudo"


@_rule(r"permission denied while trying to connect to the docker daemon")
def _docker_perm(_m: re.Match[str], _t: str) -> str:
    return (
        "cannot use Docker as this user (permission denied on the socket); add the user to "
        "the docker group or set ansible_become: true"
    )


@_rule(r"cannot connect to the docker daemon|is the docker daemon running")
def _docker_down(_m: re.Match[str], _t: str) -> str:
    return "the Docker engine is not running; start it (systemctl start docker)"


@_rule(r"docker-compose: (command )?not found|'compose' is not a docker command"
       r"|unknown (shorthand flag|command).*compose|docker compose not found")  # fmt: skip
def _no_compose(_m: re.Match[str], _t: str) -> str:
    return "docker compose not found; install docker-compose-plugin (or docker-compose)"


@_rule(r"docker: (command )?not found|no such file or directory: b?'docker'")
def _no_docker(_m: re.Match[str], _t: str) -> str:
    return "docker not found; install Docker Engine (docker.io or docker-ce)"


@_rule(r"no space left on device")
def _disk_full(_m: re.Match[str], _t: str) -> str:
    return "disk full on the host (no space left on device); free space or set deployer_root"


@_rule(r"port is already allocated|address already in use|bind for [0-9.:]+:(\d+) failed")
def _port(_m: re.Match[str], _t: str) -> str:
    return "the port is in use on the host; free it or set deployer_port"


@_rule(r"(lookup|dial tcp|i/o timeout|tls handshake timeout|no such host|network is unreachable)"
       r".*|.*(temporary failure in name resolution)")  # fmt: skip
def _registry(_m: re.Match[str], text: str) -> str:
    if "pull" in text or "/v2/" in text or "registry" in text or "manifest" in text:
        return (
            "registry unreachable and no local image; 'docker load' it on the host or let "
            "deployer ship it (unset deployer_image, or build or pull it on this machine)"
        )
    return "network unreachable from the host; check its DNS and outbound access"


@_rule(r"pull access denied|manifest unknown|manifest for .* not found|repository does not exist"
       r"|no such image|not found: manifest")  # fmt: skip
def _no_image(_m: re.Match[str], _t: str) -> str:
    return "the image exists in no registry the host can reach; check deployer_image"


@_rule(r"sha256 mismatch|checksum mismatch|the checksum for .* did not match")
def _checksum(_m: re.Match[str], _t: str) -> str:
    return "a transfer arrived corrupted (sha256 mismatch); run 'deployer fleet deploy' again"


@_rule(r"image id mismatch")
def _image_id(_m: re.Match[str], _t: str) -> str:
    return (
        "the loaded image is not the one sent (image id mismatch); run 'deployer fleet deploy' "
        "again"
    )


def _step_rules(step: str, text: str) -> str | None:
    """Reasons that depend on the step more than on the words."""
    if step == "wait until healthy":
        return (
            "the server did not become healthy in time; see last_logs and the run folder "
            "(memory, model file, or a slow disk)"
        )
    if step.startswith("smoke test"):
        status = re.search(r"status code was (\d+)", text)
        code = f" (HTTP {status.group(1)})" if status else ""
        return f"the server is up but the smoke test failed{code}; see last_logs"
    if step == "download the weights (sha256 checked)":
        return (
            "the host could not download the weights from the Hub; check its access to the "
            "Hub (or block it so deployer ships the weights from this machine)"
        )
    return None


def raw_line(text: str) -> str:
    """The raw text of a failure cut to one printable line."""
    line = " ".join(printable(" ".join(text.split())).split())
    return line[:RAW_MAX] + ("..." if len(line) > RAW_MAX else "")


def explain(step: str, text: str) -> str:
    """The one-line reason of a failure in `step` whose output was `text`: the cause and the
    next step; the step and the raw text when no rule knows it."""
    low = " ".join(text.lower().split())
    for pattern, fn in _RULES:
        m = pattern.search(low)
        if m:
            return fn(m, low)
    by_step = _step_rules(step, low)
    if by_step:
        return by_step
    raw = raw_line(text) or "failed"
    return f"{step}: {raw}; see the run folder for Ansible's output" if step else raw


def explain_unreachable(text: str) -> str:
    """The one-line reason of a host Ansible could not reach."""
    low = " ".join(text.lower().split())
    m = _RULES[0][0].search(low)  # the first rule: SSH login refused
    if m:
        return _RULES[0][1](m, low)
    return f"unreachable over SSH ({raw_line(text)}); check ansible_host and that sshd runs there"
