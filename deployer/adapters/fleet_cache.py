"""The controller's cache of what the fleet ships: image archives and weights, cut into parts.

Layout under `<cache>/fleet/` (the user cache dir, DEPLOYER_CACHE_DIR overrides it):
- `blobs/<sha256>/00000, 00001, ...`: a file's parts, and `index.json` (written last, so a
  blob without it is incomplete and is made again);
- `images/<image id>.json`: which blob holds `docker save` of that image.
A blob is made once per sha256 and an archive once per image id; reruns only check sizes.
Delete the folder to free the space; it is made again when needed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from deployer.adapters.docker_engine import DockerEngine
from deployer.core.errors import InvalidRequest
from deployer.core.fleet.shipping import PART_BYTES, Blob, ImageArchive, part_name

if TYPE_CHECKING:
    import docker

READ_BYTES = 1 << 20
INDEX = "index.json"


def fleet_cache_dir() -> Path:
    """`<user cache>/deployer/fleet`."""
    from deployer.adapters.filememo import cache_dir

    return cache_dir() / "fleet"


def _split(chunks: Iterable[bytes], into: Path, part_bytes: int) -> tuple[str, int, int]:
    """Write `chunks` as numbered parts of `part_bytes` into `into`: sha256, size, parts."""
    h = hashlib.sha256()
    size = 0
    index = 0
    out: BinaryIO | None = None
    filled = 0
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                if out is None or filled == part_bytes:
                    if out is not None:
                        out.close()
                    out = (into / part_name(index)).open("wb")
                    index += 1
                    filled = 0
                take = view[: part_bytes - filled]
                out.write(take)
                h.update(take)
                filled += len(take)
                size += len(take)
                view = view[len(take) :]
    finally:
        if out is not None:
            out.close()
    return h.hexdigest(), size, index


def _read(path: Path) -> Iterable[bytes]:
    with path.open("rb") as f:
        while block := f.read(READ_BYTES):
            yield block


class DiskShipCache:
    """ShipCache over the user cache dir and the local engine (docker save)."""

    def __init__(
        self,
        root: Path | None = None,
        engine: Callable[[], DockerEngine] | None = None,
        part_bytes: int = PART_BYTES,
    ) -> None:
        self.root = root or fleet_cache_dir()
        self._engine = engine
        self.part_bytes = part_bytes

    def _client(self) -> docker.DockerClient:
        from deployer.core.errors import EngineUnavailable

        if self._engine is None:
            raise EngineUnavailable("no container engine on this machine")
        return self._engine().client()

    def image_id(self, tag: str) -> str | None:
        """The id of image `tag` if this machine's engine holds it; None without an engine."""
        from deployer.core.errors import EngineUnavailable

        try:
            info = self._engine().image_info(tag=tag) if self._engine else None
        except EngineUnavailable:
            return None
        return info.id if info is not None else None

    def image_size(self, tag: str) -> int:
        """The engine's size of `tag` (0 when unknown)."""
        from deployer.core.errors import EngineUnavailable

        try:
            info = self._engine().image_info(tag=tag) if self._engine else None
        except EngineUnavailable:
            return 0
        return info.size_bytes if info is not None else 0

    def _blob(self, sha256: str) -> Blob | None:
        folder = self.root / "blobs" / sha256
        try:
            index = json.loads((folder / INDEX).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(index, dict) or index.get("sha256") != sha256:
            return None
        size, part_bytes, count = index.get("size"), index.get("part_bytes"), index.get("count")
        if not (isinstance(size, int) and isinstance(part_bytes, int) and isinstance(count, int)):
            return None
        blob = Blob(sha256, size, tuple(str(folder / part_name(i)) for i in range(count)),
                    part_bytes)  # fmt: skip
        for i, p in enumerate(blob.parts):
            try:
                if Path(p).stat().st_size != blob.part_size(i):
                    return None
            except OSError:
                return None
        return blob

    def _store(self, chunks: Iterable[bytes], want: str | None, source: str) -> Blob:
        blobs = self.root / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=blobs))
        try:
            sha, size, count = _split(chunks, tmp, self.part_bytes)
            if want is not None and sha != want:
                raise InvalidRequest(
                    f"{source} has sha256 {sha}, expected {want}",
                    "The file changed or is corrupt: pull it again ('deployer pull').",
                )
            (tmp / INDEX).write_text(json.dumps(
                {"sha256": sha, "size": size, "part_bytes": self.part_bytes, "count": count}
            ))  # fmt: skip
            dest = blobs / sha
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        blob = self._blob(sha)
        if blob is None:
            raise RuntimeError(f"blob {sha} did not survive being written")
        return blob

    def file_blob(self, path: str, sha256: str | None, size: int) -> Blob:
        """`path` cut into parts once per sha256 (hashed while cut; refused if it differs)."""
        if sha256:
            found = self._blob(sha256)
            if found is not None and found.size == size:
                return found
        return self._store(_read(Path(path)), sha256, path)

    def image_archive(self, tag: str) -> ImageArchive:
        """`docker save` of `tag` once per image id, cut into parts."""
        client = self._client()
        image = client.images.get(tag)
        image_id = str(image.id)
        record = self.root / "images" / f"{image_id.removeprefix('sha256:')}.json"
        try:
            known = json.loads(record.read_text())
            blob = self._blob(str(known["sha256"]))
            if blob is not None:
                return ImageArchive(tag, image_id, blob)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        blob = self._store(image.save(named=tag), None, f"docker save {tag}")
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sha256": blob.sha256, "tag": tag, "size": blob.size}))
        tmp.replace(record)
        return ImageArchive(tag, image_id, blob)
