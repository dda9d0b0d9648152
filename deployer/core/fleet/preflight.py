"""The fleet preflight: what each host has (from templates/ansible/probe.py), what it lacks,
and how it will get each piece, decided here before anything on a host changes.

Pure: the probe's JSON arrives as text from the preflight play's report; every field is
checked for type and bounds before it is used (a host is as untrusted as any input).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from deployer.core.fleet.hosts import HostPlan, Weight
from deployer.core.fleet.shipping import (
    MARK_SUFFIX,
    PART_BYTES,
    Blob,
    FleetImage,
    ImageArchive,
    Transfers,
    image_parts_dir,
    missing_parts,
    parts_dir,
    registry_url,
)
from deployer.core.serve.conventions import HEALTH_PATH
from deployer.core.units import fmt_bytes
from deployer.core.untrusted import printable

PROBE_MAX_CHARS = 2_000_000
COMPOSE_TOOLS = ("docker compose", "docker-compose")
_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_PART_RE = re.compile(r"^[0-9]{1,8}$")
FILE_STATES = ("verified", "hashed", "absent", "differs")


class ProbeUnreadable(ValueError):
    """The host's preflight answer is not what probe.py prints."""


def _text(value: Any, limit: int = 300) -> str:
    return printable(" ".join(str(value).split()))[:limit] if value is not None else ""


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 62:
        return None
    return value


def _parts(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {k: n for k, v in list(value.items())[:100_000]
            if isinstance(k, str) and _PART_RE.fullmatch(k) and (n := _int(v)) is not None}  # fmt: skip


def _reach(value: Any) -> tuple[bool | None, str]:
    if not isinstance(value, dict):
        return None, ""
    return value.get("ok") is True, _text(value.get("error"))


@dataclass(frozen=True)
class FileProbe:
    """One weights file on the host: its state and the parts of it already there."""

    state: str  # verified (its mark holds) | hashed (sha256 right, no mark) | absent | differs
    parts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class HostProbe:
    """What one host has, as its preflight found it."""

    docker_ok: bool
    docker_error: str = ""
    compose: str | None = None
    image_id: str | None = None
    own_running: bool = False
    disk_path: str = ""
    disk_free: int | None = None
    port_busy: bool = False
    registry_ok: bool | None = None  # None: not asked (no registry may be contacted)
    registry_error: str = ""
    hub_ok: bool | None = None
    hub_error: str = ""
    files: dict[str, FileProbe] = field(default_factory=dict)
    image_parts: dict[str, int] = field(default_factory=dict)
    fingerprint: str | None = None  # of the plan running now (stored on the host)
    health: int | None = None  # /health's status, asked only when that plan is today's


def probe_from_text(text: str) -> HostProbe:
    """probe.py's JSON, checked field by field; ProbeUnreadable if it is not that."""
    if not isinstance(text, str) or len(text) > PROBE_MAX_CHARS:
        raise ProbeUnreadable("the preflight answer is missing or too long")
    try:
        raw = json.loads(text)
    except ValueError:
        raise ProbeUnreadable(f"the preflight printed {_text(text, 120)!r}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("docker"), dict):
        raise ProbeUnreadable("the preflight answer has no docker field")
    docker = raw["docker"]
    disk: dict[str, Any] = raw["disk"] if isinstance(raw.get("disk"), dict) else {}
    image_id = raw.get("image_id")
    files: dict[str, FileProbe] = {}
    if isinstance(raw.get("files"), dict):
        for dest, st in list(raw["files"].items())[:1000]:
            if isinstance(dest, str) and isinstance(st, dict) and st.get("state") in FILE_STATES:
                files[dest] = FileProbe(str(st["state"]), _parts(st.get("parts")))
    registry_ok, registry_error = _reach(raw.get("registry"))
    hub_ok, hub_error = _reach(raw.get("hub"))
    compose = raw.get("compose")
    fingerprint = raw.get("fingerprint")
    return HostProbe(
        docker_ok=docker.get("ok") is True,
        docker_error=_text(docker.get("error")),
        compose=compose if compose in COMPOSE_TOOLS else None,
        image_id=image_id if isinstance(image_id, str) and _ID_RE.fullmatch(image_id) else None,
        own_running=raw.get("own_running") is True,
        disk_path=_text(disk.get("path"), 1024),
        disk_free=_int(disk.get("free")),
        port_busy=raw.get("port_busy") is True,
        registry_ok=registry_ok, registry_error=registry_error,
        hub_ok=hub_ok, hub_error=hub_error,
        files=files,
        image_parts=_parts(raw.get("image_parts")),
        fingerprint=fingerprint if isinstance(fingerprint, str)
        and re.fullmatch(r"[0-9a-f]{64}", fingerprint) else None,
        health=_int(raw.get("health")),
    )  # fmt: skip


def probe_request(hp: HostPlan, image: FleetImage, hub_endpoint: str) -> dict[str, Any]:
    """What probe.py checks on this host (its `DEPLOYER_PROBE`)."""
    return {
        "root": hp.host.root,
        "port": hp.host.port,
        "name": hp.name,
        "image": hp.image,
        "registry": registry_url(image.registry) if image.registry else None,
        "hub": hub_endpoint if any(w.url for w in hp.weights) else None,
        "files": [
            {
                "dest": w.dest,
                "size": w.size,
                "sha256": w.sha256,
                "mark": w.dest + MARK_SUFFIX,
                "parts_dir": parts_dir(w.dest),
            }
            for w in hp.weights
        ],
        "image_parts_dir": image_parts_dir(hp.host.root, image.local_id)
        if image.local_id
        else None,
        "fingerprint_file": f"{hp.dir}/fingerprint",
        "fingerprint": hp.fingerprint(),
        "health_url": f"http://127.0.0.1:{hp.host.port}{health_path(hp.host.backend)}",
    }


def health_path(backend: str) -> str:
    return HEALTH_PATH.get(backend, HEALTH_PATH["llamacpp"])


@dataclass
class Decision:
    """How one host gets what it lacks, or the problems that stop it (first one is the reason)."""

    host: str
    problems: list[str] = field(default_factory=list)
    unchanged: bool = False  # already runs today's plan, healthy: nothing to do
    image: str = "present"  # present | pull | ship
    weights: dict[str, str] = field(default_factory=dict)  # dest -> present | download | ship
    needs_bytes: int = 0  # on the root's disk

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        return self.problems[0] if self.problems else ""


def _docker_problem(probe: HostProbe) -> str:
    err = probe.docker_error
    if "permission denied" in err.lower():
        return (
            "cannot use Docker as this user (permission denied on the socket); add the user "
            "to the docker group or set ansible_become: true"
        )
    if "no such file" in err.lower() and "docker" in err.lower() and "sock" not in err.lower():
        return "docker not found; install Docker Engine (docker.io or docker-ce)"
    if "cannot connect" in err.lower() or "is the docker daemon running" in err.lower():
        return "the Docker engine is not running; start it (systemctl start docker)"
    return f"docker is not usable ({err or 'no answer'}); install Docker Engine and start it"


def _image_action(probe: HostProbe, image: FleetImage) -> tuple[str, str]:
    """present | pull | ship, or a problem."""
    held = probe.image_id is not None and (image.local_id in (None, probe.image_id))
    if held:
        return "present", ""
    if image.registry and probe.registry_ok:
        return "pull", ""
    if image.local_id:
        return "ship", ""
    where = (
        f"{image.registry} unreachable: {probe.registry_error or 'no answer'}"
        if image.registry
        else "no registry may be contacted"
    )
    return "", (
        f"registry unreachable and no local image {image.tag} ({where}); 'docker load' it on "
        "the host, or build or pull it on this machine so deployer can ship it"
    )


def decide(hp: HostPlan, probe: HostProbe, image: FleetImage, *, image_bytes: int) -> Decision:
    """Everything the host lacks and where each piece comes from; problems in reason order."""
    d = Decision(hp.host.host)
    if probe.fingerprint == hp.fingerprint() and probe.health == 200:
        d.unchanged = True
        d.weights = {w.dest: "present" for w in hp.weights}
        return d
    if not probe.docker_ok:
        d.problems.append(_docker_problem(probe))
    elif probe.compose is None:
        d.problems.append(
            "docker compose not found; install docker-compose-plugin (or docker-compose)"
        )
    if probe.port_busy and not probe.own_running:
        d.problems.append(
            f"port {hp.host.port} is in use on the host; free it or set deployer_port"
        )
    if probe.docker_ok:
        d.image, problem = _image_action(probe, image)
        if problem:
            d.problems.append(problem)
        elif d.image == "ship":
            d.needs_bytes += image_bytes
    for w in hp.weights:
        d.weights[w.dest], need = _weight_action(w, probe)
        d.needs_bytes += need
    free = probe.disk_free
    if free is not None and d.needs_bytes > free:
        d.problems.append(
            f"not enough disk for the weights (needs {fmt_bytes(d.needs_bytes)}, has "
            f"{fmt_bytes(free)}) in {probe.disk_path or hp.host.root}; free space there or set "
            "deployer_root to a larger disk"
        )
    return d


def _weight_action(w: Weight, probe: HostProbe) -> tuple[str, int]:
    """present | download | ship, and the bytes it needs on the root's disk."""
    fp = probe.files.get(w.dest, FileProbe("absent"))
    if fp.state in ("verified", "hashed"):
        return "present", 0
    if w.url and probe.hub_ok:
        return "download", w.size
    # Shipped: the parts not yet there, plus one part of room while they are joined.
    have = sum(fp.parts.values())
    return "ship", max(w.size - have, 0) + min(w.size, PART_BYTES)


def transfers(
    hp: HostPlan,
    d: Decision,
    probe: HostProbe,
    *,
    archive: ImageArchive | None,
    blobs: dict[str, Blob],
) -> Transfers:
    """The lists the deploy playbook loops over: parts to send, files to join, images to load."""
    t = Transfers(image_action=d.image)
    if d.image == "ship" and archive is not None:
        folder = image_parts_dir(hp.host.root, archive.image_id)
        t.add_parts(archive.blob, folder, missing_parts(archive.blob, probe.image_parts))
        t.image_load = {"parts_dir": folder, "count": len(archive.blob.parts),
                        "sha256": archive.blob.sha256, "id": archive.image_id,
                        "tag": archive.tag}  # fmt: skip
    for w in hp.weights:
        action = d.weights.get(w.dest, "ship")
        fp = probe.files.get(w.dest, FileProbe("absent"))
        if action == "present":
            if fp.state == "hashed":
                t.marks.append({"dest": w.dest, "mark": w.dest + MARK_SUFFIX, "text":
                                f"{w.sha256} {w.size}"})  # fmt: skip
            continue
        if action == "download":
            t.download.append({"url": w.url, "dest": w.dest, "sha256": w.sha256})
            t.marks.append({"dest": w.dest, "mark": w.dest + MARK_SUFFIX,
                            "text": f"{w.sha256} {w.size}"})  # fmt: skip
            continue
        blob = blobs[w.dest]
        folder = parts_dir(w.dest)
        t.add_parts(blob, folder, missing_parts(blob, fp.parts))
        t.files_sent += 1
        t.assemble.append({"dest": w.dest, "parts_dir": folder, "count": len(blob.parts),
                           "sha256": blob.sha256, "mark": w.dest + MARK_SUFFIX,
                           "text": f"{blob.sha256} {blob.size}"})  # fmt: skip
    return t


def preflight_row(probe: HostProbe | None, d: Decision | None) -> dict[str, Any]:
    """What `--check-hosts` shows per host (the JSON `preflight` field)."""
    if probe is None or d is None:
        return {}
    return {
        "docker": probe.docker_ok,
        "compose": probe.compose,
        "image": d.image if d.ok or d.image else None,
        "image_present": probe.image_id is not None,
        "disk_path": probe.disk_path or None,
        "disk_free_bytes": probe.disk_free,
        "needs_bytes": d.needs_bytes,
        "port_free": not probe.port_busy or probe.own_running,
        "registry": probe.registry_ok,
        "hub": probe.hub_ok,
        "weights": dict(d.weights),
        "problems": list(d.problems),
    }
