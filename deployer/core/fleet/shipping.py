"""What the controller ships to hosts that cannot fetch for themselves: the runtime image and
the weights, cut into parts in the controller's cache and sent part by part.

Why parts: Ansible's `copy` of one big file starts over when it is cut, and `synchronize`
(rsync) lives outside ansible-core and needs rsync on both ends. A part that arrived is never
sent again (the preflight lists what is there), so an interrupted transfer resumes at the first
missing part; the host checks the sha256 of the whole once the parts are joined.

Pure: the cache (docker save, hashing, splitting) is the `ShipCache` seam,
deployer/adapters/fleet_cache.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

PART_BYTES = 128 * 1024 * 1024
IMAGES_DIR = ".deployer-images"  # under the host's root: parts of an image being sent
MARK_SUFFIX = ".verified"  # next to a weights file: "sha256 size", written once verified


@dataclass(frozen=True)
class Blob:
    """A file in the controller's cache, cut into parts (controller paths, in order)."""

    sha256: str
    size: int
    parts: tuple[str, ...]
    part_bytes: int = PART_BYTES

    def part_size(self, index: int) -> int:
        """The size of part `index` (the last one holds the rest)."""
        return min(self.part_bytes, self.size - index * self.part_bytes)


@dataclass(frozen=True)
class ImageArchive:
    """`docker save` of one image, cached by its image id."""

    tag: str
    image_id: str
    blob: Blob


class ShipCache(Protocol):
    """The controller's cache of what it ships (deployer.adapters.fleet_cache.DiskShipCache)."""

    def image_id(self, tag: str) -> str | None:
        """The id of image `tag` if this machine's engine holds it (no registry asked)."""
        ...

    def image_size(self, tag: str) -> int:
        """The size of image `tag` as the engine reports it (an estimate of its archive)."""
        ...

    def image_archive(self, tag: str) -> ImageArchive:
        """`tag` saved and cut into parts once per image id (reused while the id holds)."""
        ...

    def file_blob(self, path: str, sha256: str | None, size: int) -> Blob:
        """A local file cut into parts once per sha256; refused when its sha256 differs."""
        ...


@dataclass(frozen=True)
class FleetImage:
    """The runtime image every host of one kind runs, and where a host may get it."""

    tag: str
    why: str
    registry: str | None  # the registry a host may pull from; None: never pulled (local build)
    local_id: str | None  # the controller holds it (so it can be shipped)


_REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def registry_of(tag: str) -> str:
    """The registry host of an image reference (Docker's rule: a first part with '.' or ':'
    or 'localhost' is a registry; anything else lives on Docker Hub)."""
    first, slash, _rest = tag.partition("/")
    if slash and (("." in first or ":" in first or first == "localhost")
                  and _REGISTRY_RE.fullmatch(first)):  # fmt: skip
        return first
    return "registry-1.docker.io"


def registry_url(registry: str) -> str:
    """The registry API's base URL: any HTTP answer there means the registry is reachable."""
    return f"https://{registry}/v2/"


def parts_dir(dest: str) -> str:
    """Where the parts of a weights file wait on the host until joined."""
    return f"{dest}.parts"


def image_parts_dir(root: str, image_id: str) -> str:
    """Where the parts of an image archive wait on the host until loaded."""
    return f"{root}/{IMAGES_DIR}/{image_id.removeprefix('sha256:')[:64]}.parts"


def part_name(index: int) -> str:
    return f"{index:05d}"


def missing_parts(blob: Blob, present: dict[str, int]) -> list[int]:
    """Parts the host still needs: absent, or not yet of their full size."""
    return [i for i in range(len(blob.parts)) if present.get(part_name(i)) != blob.part_size(i)]


@dataclass
class Transfers:
    """One host's share of the shipping: what to pull, send, join, load and download."""

    image_action: str = "present"  # present | pull | ship
    image_load: dict[str, Any] | None = None
    send: list[dict[str, str]] = field(default_factory=list)
    assemble: list[dict[str, Any]] = field(default_factory=list)
    download: list[dict[str, Any]] = field(default_factory=list)
    marks: list[dict[str, Any]] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    files_sent: int = 0

    def add_parts(self, blob: Blob, folder: str, missing: list[int]) -> None:
        """Send the `missing` parts of `blob` into `folder` on the host."""
        self.folders.append(folder)
        for i in missing:
            self.send.append({"src": blob.parts[i], "dest": f"{folder}/{part_name(i)}"})
            self.bytes_sent += blob.part_size(i)

    def as_var(self) -> dict[str, Any]:
        """The playbook variables (the deploy playbook only loops over these lists)."""
        return {
            "image_pull": self.image_action == "pull",
            "image_load": self.image_load,
            "send": self.send,
            "assemble": self.assemble,
            "download": self.download,
            "marks": self.marks,
            "folders": self.folders,
        }

    def summary(self) -> dict[str, Any]:
        """What this host was sent, for the JSON report (reruns prove nothing is sent twice)."""
        return {
            "image": self.image_action,
            "parts_sent": len(self.send),
            "bytes_sent": self.bytes_sent,
            "weights_shipped": len(self.assemble),
            "weights_downloaded": len(self.download),
        }
