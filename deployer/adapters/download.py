"""Verified, resumable downloads into the standard Hugging Face cache (or a --local-dir).

huggingface_hub gives us URLs, auth headers, metadata, the cache layout and its locks; the byte
transfer is ours because the library neither resumes across processes nor checks sha256 (its
own `http_get` is one stream through its session; parallel transfer exists only for xet
repos). A file is fetched in blocks (Range requests, optionally several connections) into
`blobs/<sha256>.incomplete`; a sidecar `<...>.incomplete.progress` records, per block, how many
bytes are on disk, written after the data so a SIGKILL never overstates progress. Bodies are
read straight into reused buffers (http_range.py), falling back to the library's session for
anything unusual. The caller's thread hashes in order as the front advances: bytes near the
hash position straight from those buffers, anything else (a resumed prefix, blocks far ahead)
from the file; then the sha256 is compared and the file atomically renamed into its blob.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import (  # type: ignore[attr-defined]
    WeakFileLock,
    build_hf_headers,
)

from deployer.adapters import filememo
from deployer.adapters.http_range import RangeBody, RangeCut, open_range, range_total
from deployer.adapters.hub import _translated, fetch_listing
from deployer.adapters.local_files import contained, sha256_file
from deployer.core.errors import ChecksumMismatch, ExternalUnavailable, SizeMismatch
from deployer.core.model.resolve import RemoteFile
from deployer.core.pull.files import (
    FetchResult,
    FileTarget,
    ProgressSink,
    RepoListing,
)
from deployer.core.pull.hub_checks import check_repo_id, check_repo_path, check_revision
from deployer.core.untrusted import UntrustedValue, check_commit, check_sha256

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import TransportError  # type: ignore[no-redef]

BLOCK_BYTES = 16 << 20
MAX_AUTO_CONNECTIONS = 4
_SMALL_FILE_BYTES = 4 * BLOCK_BYTES
_READ_CHUNK = 4 << 20  # one read of a block the hasher takes from the file
_HASH_STEP = 1 << 20  # = one receive buffer: the hasher wakes per buffer, not per MiBs held
_KEEP_WINDOW = 32 << 20  # blocks starting this close to the hash position stay in memory
_SAVE_STEP = 64 << 10
_BUF_BYTES = 1 << 20  # one socket read target; the hasher takes these whole
_TIMEOUT_S = 60.0
_MAGIC = b"DPLPRG01"
_HEADER = struct.Struct("<8sQQ")  # magic, block size, file size
_SLOT = struct.Struct("<Q")
_RETRIES = 5
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_HUB = "Hugging Face Hub"


def default_cache_dir() -> Path:
    """The Hub cache the library would use, read from the environment now (not at import)."""
    if explicit := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def repo_folder(repo_id: str) -> str:
    """models--ORG--NAME, as huggingface_hub names a model repo's cache folder."""
    return "--".join(["models", *repo_id.split("/")])


def choose_connections(size_bytes: int, cpus: int | None = None) -> int:
    """Connections for one file when the user did not say: 1, or up to 4 on bigger machines.

    Parallel ranges help where one connection is bound by latency (a long link), but each one
    costs the receiving process CPU, and the caller's thread needs most of a core for sha256.
    With 2 CPUs or fewer a second connection only competes for them: measured on loopback with
    2 cores, one connection was as fast or faster, and with two the hasher fell behind so that
    60-80% of the file was hashed back from disk instead of from memory. Below 4 blocks the
    extra request and the out-of-order window cost more than a second stream could win.
    """
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    if cpus <= 2 or size_bytes < _SMALL_FILE_BYTES:
        return 1
    return min(MAX_AUTO_CONNECTIONS, cpus)


def _read_sidecar(path: Path, max_bytes: int) -> bytes:
    """A progress sidecar's bytes, or b"" when it is absent, not a regular file (a planted link,
    a FIFO, /dev/zero) or longer than any sidecar of this file could be."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return b""
        return os.pread(fd, max_bytes, 0)
    finally:
        os.close(fd)


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Read from offset into view; the byte count."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)  # pragma: no cover - platforms without preadv
    view[: len(data)] = data
    return len(data)


class _Blocks:
    """Per-block progress of one partial file, mirrored to its sidecar."""

    def __init__(self, part: Path, size: int, block: int) -> None:
        self.part, self.size, self.block = part, size, block
        self.sidecar = part.with_name(part.name + ".progress")
        self.count = max(1, -(-size // block))
        self.done = [0] * self.count
        self.cond = threading.Condition()
        self._load()
        self.sidecar.unlink(missing_ok=True)  # never write through a link planted in its place
        self.fd = os.open(self.sidecar, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.pwrite(self.fd, _HEADER.pack(_MAGIC, block, size), 0)
        os.pwrite(self.fd, b"".join(_SLOT.pack(d) for d in self.done), _HEADER.size)
        self.saved = list(self.done)

    def length(self, i: int) -> int:
        return min(self.block, self.size - i * self.block)

    def _load(self) -> None:
        if not self.part.exists():
            self.sidecar.unlink(missing_ok=True)
            return
        on_disk = self.part.stat().st_size
        want = _HEADER.size + _SLOT.size * self.count
        raw = _read_sidecar(self.sidecar, want)
        if len(raw) == want and _HEADER.unpack_from(raw) == (_MAGIC, self.block, self.size):
            slots = struct.unpack_from(f"<{self.count}Q", raw, _HEADER.size)
        elif not raw and on_disk <= self.size:
            # A plain prefix: our own older file or one huggingface_hub left when killed.
            slots = tuple(
                max(0, min(self.block, on_disk - i * self.block)) for i in range(self.count)
            )
        else:
            slots = (0,) * self.count
        for i, got in enumerate(slots):
            # never trust more than the data file really holds
            self.done[i] = max(0, min(got, self.length(i), on_disk - i * self.block))

    def save(self, i: int) -> None:
        """Write block i's progress to the sidecar (only after its data was written)."""
        value = self.done[i]
        if value != self.saved[i]:
            os.pwrite(self.fd, _SLOT.pack(value), _HEADER.size + _SLOT.size * i)
            self.saved[i] = value

    def saved_lag(self, i: int) -> None:
        """Save block i if the sidecar lags by a step; a kill refetches at most that much."""
        if self.done[i] - self.saved[i] >= _SAVE_STEP:
            self.save(i)

    def close(self) -> None:
        os.close(self.fd)

    def remove(self) -> None:
        self.sidecar.unlink(missing_ok=True)


class _Kept:
    """Chunks of one block held in memory for the hasher, from absolute offset `start`."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.chunks: deque[bytes | memoryview] = deque()
        self.end = start  # offset just past the last chunk handed over


class _Transfer:
    """One file's block download (threads) and in-order hashing (caller's thread).

    Blocks near the hashing position keep their chunks in memory until hashed, so the hasher
    reads each byte once, from the network buffer; blocks further ahead (and whatever a
    resumed partial already held) are hashed from the file.
    """

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        blocks: _Blocks,
        connections: int,
        progress: ProgressSink,
        direct: bool = True,
    ) -> None:
        self.url, self.headers, self.blocks = url, headers, blocks
        self.connections, self.progress = connections, progress
        self.pending = deque(i for i in range(blocks.count) if blocks.done[i] < blocks.length(i))
        self.errors: list[BaseException] = []
        self.stop = False
        self.downloaded = 0
        self.hashed = 0
        self.kept: dict[int, _Kept] = {}
        self.window = max(_KEEP_WINDOW, blocks.block)
        # reused for reads from the file and for joining small chunks, grown on first use
        # (a fresh buffer per read page-faults on every page); direct reads never need it
        self._buf = bytearray()
        # (block, offset, from memory): the hasher sleeps until that front passes offset
        self.wake_at: tuple[int, int, bool] | None = None
        self._pool: list[bytearray] = []
        self.direct = direct
        self._lock = threading.Lock()

    def run(self, fd: int) -> str:
        """Download what is missing while hashing in order; the hex sha256."""
        import hashlib

        workers = [
            threading.Thread(target=self._worker, args=(fd,), daemon=True)
            for _ in range(min(self.connections, len(self.pending)))
        ]
        for w in workers:
            w.start()
        digest, size = hashlib.sha256(), self.blocks.size
        try:
            while self.hashed < size:
                parts, spent = self._next(fd, workers)
                if not parts:
                    break
                for data in parts:
                    digest.update(data)
                    with self.blocks.cond:
                        self.hashed += len(data)
                self._release(*spent)
        finally:
            self.stop = True
            with self.blocks.cond:
                self.blocks.cond.notify_all()
            for w in workers:
                w.join()
        if self.errors:
            raise self.errors[0]
        if self.hashed < size:
            raise ExternalUnavailable(_HUB, f"download stopped at {self.hashed} of {size} bytes")
        return digest.hexdigest()

    def _next(
        self, fd: int, workers: list[threading.Thread]
    ) -> tuple[list[bytes | memoryview], list[bytearray]]:
        """(bytes at the hashing position, buffers to reuse after hashing): none at the end."""
        blocks, pos = self.blocks, self.hashed
        i = pos // blocks.block
        base = i * blocks.block
        block_end = base + blocks.length(i)
        with blocks.cond:
            while True:
                kept = self.kept.get(i)
                in_memory = kept is not None and pos >= kept.start
                limit = kept.start if kept is not None and not in_memory else block_end
                # a step at a time: waking per network chunk costs more in GIL hand-offs
                # than the hashing itself
                need = min(_HASH_STEP, limit - pos)
                front = kept.end if in_memory and kept is not None else base + blocks.done[i]
                if front - pos >= need:
                    break
                if self.errors or not any(w.is_alive() for w in workers):
                    return [], []
                self.wake_at = (i, pos + need, in_memory)
                blocks.cond.wait(0.5)
            self.wake_at = None
            if in_memory:
                assert kept is not None
                chunks = self._take(kept, i, block_end - pos)
            else:
                avail = min(base + blocks.done[i], limit) - pos
        if not in_memory:
            view = self._scratch()[: min(avail, _READ_CHUNK)]
            return [view[: _pread_into(fd, view, pos)]], []
        spent = [
            c.obj for c in chunks if isinstance(c, memoryview) and isinstance(c.obj, bytearray)
        ]
        if len(chunks) == 1 or len(chunks[0]) >= _BUF_BYTES:
            return chunks, spent
        # small chunks (the library's 64 KiB): one update per step, because each update call
        # hands the GIL over and back; a reused buffer, because a fresh one page-faults
        view, n = self._scratch(), 0
        for chunk in chunks:
            view[n : n + len(chunk)] = chunk
            n += len(chunk)
        return [view[:n]], spent

    def _scratch(self) -> memoryview:
        if not self._buf:
            self._buf = bytearray(max(_READ_CHUNK, 2 * _HASH_STEP))
        return memoryview(self._buf)

    def _take(self, kept: _Kept, i: int, block_left: int) -> list[bytes | memoryview]:
        """Kept chunks that fit the hash buffer, at least one (caller holds the lock)."""
        taken: list[bytes | memoryview] = [kept.chunks.popleft()]
        n = len(taken[0])
        while kept.chunks and n + len(kept.chunks[0]) <= 2 * _HASH_STEP:
            taken.append(kept.chunks.popleft())
            n += len(taken[-1])
        if n >= block_left:
            del self.kept[i]
        return taken

    def _buffer(self) -> bytearray:
        with self._lock:
            return self._pool.pop() if self._pool else bytearray(_BUF_BYTES)

    def _release(self, *bufs: object) -> None:
        with self._lock:
            self._pool.extend(b for b in bufs if isinstance(b, bytearray))

    def _worker(self, fd: int) -> None:
        try:
            while not self.stop and not self.errors:
                with self._lock:
                    if not self.pending:
                        return
                    i = self.pending.popleft()
                self._fetch_block(fd, i)
        except BaseException as exc:
            self.errors.append(exc)
        finally:  # the hasher may be waiting for this worker's block
            with self.blocks.cond:
                self.blocks.cond.notify_all()

    def _fetch_block(self, fd: int, i: int) -> None:
        blocks = self.blocks
        start, end = i * blocks.block, i * blocks.block + blocks.length(i) - 1
        failures = 0
        while not self.stop and blocks.done[i] < blocks.length(i):
            offset = start + blocks.done[i]
            try:
                self._stream(fd, i, offset, end)
            except (TransportError, HfHubHTTPError, RangeCut) as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if isinstance(exc, HfHubHTTPError) and status not in (429, 500, 502, 503, 504):
                    raise
                if start + blocks.done[i] > offset:
                    failures = 0  # a cut after some progress is not a failure streak
                    continue
                failures += 1
                if failures > _RETRIES:
                    raise
                time.sleep(min(0.1 * 2**failures, 5.0))
            finally:
                blocks.save(i)

    def _keep(self, i: int, offset: int) -> _Kept | None:
        """Hold block i's chunks from `offset` in memory if the hasher will want them soon."""
        with self.blocks.cond:
            kept = self.kept.get(i)
            if kept is None and offset - self.hashed <= self.window:
                kept = self.kept[i] = _Kept(offset)
            return kept

    def _stream(self, fd: int, i: int, offset: int, end: int) -> None:
        if self.direct:
            body = open_range(self.url, self.headers, offset, end, _TIMEOUT_S)
            if body is not None:
                with body:
                    self._stream_direct(fd, i, offset, end, body)
                return
        self._stream_library(fd, i, offset, end)

    def _check_total(self, total: int | None) -> None:
        """The server's length for the whole file must be the listing's (where it states one)."""
        if total is not None and total != self.blocks.size:
            raise SizeMismatch("", self.blocks.size, total)  # the caller names the file

    def _stream_direct(self, fd: int, i: int, offset: int, end: int, body: RangeBody) -> None:
        """Read the body into reused buffers: one copy from the socket, none per chunk."""
        self._check_total(body.total)
        skip = offset if body.status == 200 else 0  # server ignored the Range
        kept = self._keep(i, offset)
        while offset <= end and not self.stop:
            buf = self._buffer()
            view = memoryview(buf)
            if skip:
                n = body.readinto(view[: min(len(buf), skip)])
                self._release(buf)
                if not n:
                    raise RangeCut("body ended before the range")
                skip -= n
                continue
            want, filled = min(len(buf), end + 1 - offset), 0
            while filled < want and not self.stop:
                n = body.readinto(view[filled:want])
                if not n:
                    break
                self._write(fd, i, offset + filled, view[filled : filled + n])
                filled += n
            if kept is not None and filled:
                self._hand(kept, i, view[:filled])  # the hasher releases the buffer
            else:
                self._release(buf)
            offset += filled
            if filled < want and not self.stop:
                raise RangeCut(f"body ended {end + 1 - offset} bytes early")

    def _stream_library(self, fd: int, i: int, offset: int, end: int) -> None:
        """The same request through huggingface_hub's session (errors, proxies, its config)."""
        headers = {**self.headers, "Range": f"bytes={offset}-{end}", "Accept-Encoding": "identity"}
        with get_session().stream("GET", self.url, headers=headers, timeout=_TIMEOUT_S) as resp:
            hf_raise_for_status(resp)
            skip = offset if resp.status_code == 200 else 0  # server ignored the Range
            encoded = resp.headers.get("Content-Encoding", "identity") != "identity"
            if resp.status_code == 206:
                self._check_total(range_total(resp.headers.get("Content-Range")))
            elif not encoded and resp.headers.get("Content-Length", "").isdigit():
                self._check_total(int(resp.headers["Content-Length"]))
            # iter_raw skips a decoder pass over every byte; a server that encodes anyway
            # gets decoded, so the hash is over the file's bytes either way
            stream = resp.iter_bytes() if encoded else resp.iter_raw()
            kept = self._keep(i, offset)
            for chunk in stream:
                if self.stop:
                    return
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                chunk = chunk[: end + 1 - offset]
                if not chunk:
                    if offset > end:
                        return
                    continue
                self._write(fd, i, offset, chunk)
                if kept is not None:
                    self._hand(kept, i, chunk)
                offset += len(chunk)
                if offset > end:
                    return

    def _write(self, fd: int, i: int, offset: int, chunk: bytes | memoryview) -> None:
        """Write a chunk, then count it: the sidecar never claims bytes not on disk."""
        os.pwrite(fd, chunk, offset)
        n, blocks = len(chunk), self.blocks
        with blocks.cond:
            blocks.done[i] += n
            self.downloaded += n
            wake = self.wake_at
            front = i * blocks.block + blocks.done[i]
            if wake is not None and wake[0] == i and not wake[2] and front >= wake[1]:
                blocks.cond.notify_all()
        blocks.saved_lag(i)
        self.progress.advance(n)

    def _hand(self, kept: _Kept, i: int, chunk: bytes | memoryview) -> None:
        """Give written bytes to the hasher, in order, from memory."""
        with self.blocks.cond:
            kept.chunks.append(chunk)
            kept.end += len(chunk)
            wake = self.wake_at
            if wake is not None and wake[0] == i and wake[2] and kept.end >= wake[1]:
                self.blocks.cond.notify_all()


def _checked_sha256(path: Path, sha: str, progress: ProgressSink | None = None) -> str:
    """The file's sha256: remembered if unchanged since it was found to be `sha` (by path, size,
    mtime, inode: deployer.adapters.filememo), else computed, and remembered when it matches."""
    if filememo.is_verified(path, sha):
        return sha
    actual = sha256_file(path, progress)
    if actual == sha:
        filememo.remember_verified(path, sha)
    return actual


class HfCacheStore:
    """The real HubStore: huggingface_hub's cache layout, our resumable verified transfer."""

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        endpoint: str | None = None,
        token: str | None = None,
        connections: int | None = None,
        block_bytes: int = BLOCK_BYTES,
        direct_reads: bool = True,
    ) -> None:
        self.root = (cache_dir or default_cache_dir()).expanduser()
        self.endpoint, self.token = endpoint, token
        # None: chosen per file by choose_connections; a number (--connections) is used as is
        self.connections = None if connections is None else max(1, connections)
        self.block_bytes = block_bytes
        # False: every byte through huggingface_hub's session (slower; same cache and checks)
        self.direct_reads = direct_reads

    # -- layout -------------------------------------------------------------------------------
    def cache_root(self) -> Path:
        """The hub cache folder."""
        return self.root

    def cached_file(self, repo_id: str, filename: str) -> Path | None:
        """The file in the cache (the snapshot refs/main points at first), if there."""
        check_repo_path(repo_id, filename)
        repo_dir = self._repo_dir(repo_id)
        main = _read_sidecar(repo_dir / "refs" / "main", 64).decode("ascii", "replace").strip()
        revisions = [main] if _COMMIT_RE.fullmatch(main) else []
        snapshots = repo_dir / "snapshots"
        if snapshots.is_dir():
            # only commit-named folders: anything else in the cache is not a snapshot
            revisions += sorted(p.name for p in snapshots.iterdir() if _COMMIT_RE.fullmatch(p.name))
        for rev in revisions:
            candidate = contained(snapshots / rev, filename)
            if candidate.is_file():
                return candidate
        return None

    def _repo_dir(self, repo_id: str) -> Path:
        return contained(self.root, repo_folder(check_repo_id(repo_id)))

    def _lock(self, repo_id: str, sha: str) -> Path:
        path = contained(self.root / ".locks" / repo_folder(repo_id), f"{sha}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _paths(self, t: FileTarget) -> tuple[Path, Path, Path]:
        """(final path, partial path, lock path) for a target.

        The listing was checked where it entered (deployer.adapters.hub.listed_files); the
        values are checked again here, where they become paths, so no caller can get a path
        outside the cache or the target dir from a value of the wrong form.
        """
        sha = check_sha256(t.sha256, f"download of {t.repo_id}/{t.name}")
        if t.local_dir is not None:
            final = contained(t.local_dir, t.name)
            work = t.local_dir / ".cache" / "huggingface" / "download"
            return final, contained(work, f"{sha}.incomplete"), contained(work, f"{sha}.lock")
        repo_dir = self._repo_dir(t.repo_id)
        commit = check_commit(t.commit, f"download of {t.repo_id}")
        final = contained(contained(repo_dir / "snapshots", commit), t.name)
        part = contained(repo_dir / "blobs", f"{sha}.incomplete")
        return final, part, self._lock(t.repo_id, sha)

    # -- listing ------------------------------------------------------------------------------
    def list_repo(self, repo_id: str, revision: str | None) -> RepoListing:
        """Every file of the repo with LFS sizes and sha256, pinned to the commit (checked)."""
        return fetch_listing(repo_id, revision, endpoint=self.endpoint, token=self.token)

    def cached_listing(self, repo_id: str, revision: str | None) -> RepoListing | None:
        """The cached snapshot's files; sha256 from the blob each one links to."""
        repo_dir = self._repo_dir(repo_id)
        rev = check_revision(revision or "main")
        commit = rev if _COMMIT_RE.fullmatch(rev) else None
        ref = contained(repo_dir / "refs", rev)
        if commit is None and ref.is_file():
            # written by us or by huggingface_hub from a server's X-Repo-Commit: checked again
            text = ref.read_text().strip()
            if not _COMMIT_RE.fullmatch(text):
                raise UntrustedValue(
                    f"Hugging Face cache {ref}",
                    "commit",
                    text,
                    "is not a 40-hex commit id",
                    f"Delete {ref} and pull again without HF_HUB_OFFLINE.",
                )
            commit = text
        if commit is None or not (repo_dir / "snapshots" / commit).is_dir():
            return None
        snapshot = repo_dir / "snapshots" / commit
        files = []
        for path in sorted(snapshot.rglob("*")):
            if not path.is_file():
                continue
            blob = path.resolve()
            sha = blob.name if _SHA_RE.fullmatch(blob.name) else None
            # names huggingface_hub placed from some listing: held to the same rules
            name = check_repo_path(repo_id, path.relative_to(snapshot).as_posix())
            files.append(RemoteFile(name, blob.stat().st_size, sha))
        return RepoListing(repo_id, commit, files)

    # -- state --------------------------------------------------------------------------------
    def present_bytes(self, target: FileTarget) -> int:
        """Size when the blob or local file is there; else what a partial already holds."""
        final, part, _ = self._paths(target)
        complete = final if target.local_dir is not None else part.with_suffix("")
        if complete.is_file() and complete.stat().st_size == target.size:
            return target.size
        candidates = [part, *self._foreign_partials(part)]
        best = 0
        for cand in candidates:
            if cand.is_file():
                blocks_file = cand.with_name(cand.name + ".progress")
                most = _HEADER.size + _SLOT.size * max(1, -(-target.size // self.block_bytes))
                if blocks_file.exists():
                    raw = _read_sidecar(blocks_file, most)[_HEADER.size :]
                    have = sum(struct.unpack(f"<{len(raw) // 8}Q", raw[: len(raw) // 8 * 8]))
                else:
                    have = cand.stat().st_size
                best = max(best, min(have, target.size))
        return best

    def _foreign_partials(self, part: Path) -> list[Path]:
        """Partials huggingface_hub left for the same blob (`<sha>.<uuid8>.incomplete`)."""
        sha = part.name.removesuffix(".incomplete")
        if not part.parent.is_dir():
            return []
        return [p for p in part.parent.glob(f"{sha}.*.incomplete") if p != part]

    def clean_stale(self, repo_id: str, keep_sha256: set[str]) -> int:
        """Delete this repo's partials whose sha256 no file at the current commit has."""
        blobs = self._repo_dir(repo_id) / "blobs"
        freed = 0
        if not blobs.is_dir():
            return 0
        for path in list(blobs.glob("*.incomplete")) + list(blobs.glob("*.incomplete.progress")):
            sha = path.name.split(".", 1)[0]
            if sha in keep_sha256 or not _SHA_RE.fullmatch(sha):
                continue
            try:  # someone downloading it holds the lock: leave theirs alone
                with WeakFileLock(self._lock(repo_id, sha), timeout=0.05):
                    if path.exists():
                        freed += path.stat().st_size
                        path.unlink()
            except Exception as exc:  # filelock.Timeout: busy
                if type(exc).__name__ != "Timeout":
                    raise
        return freed

    # -- fetch --------------------------------------------------------------------------------
    def fetch(self, target: FileTarget, progress: ProgressSink, *, offline: bool) -> FetchResult:
        """Reuse, resume or download `target`, verify its sha256, link it into place."""
        final, part, lock = self._paths(target)
        lock.parent.mkdir(parents=True, exist_ok=True)
        part.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(lock):
            if target.local_dir is not None:
                return self._fetch_local_dir(target, final, part, progress, offline)
            blob = part.with_suffix("")
            if blob.is_file():
                self._check_existing(target, blob, progress, remove_on_mismatch=True)
                self._link(target, blob, final)
                return FetchResult(final, target.sha256, 0, target.size, True)
            downloaded, reused = self._download(target, part, blob, progress)
            self._link(target, blob, final)
            return FetchResult(final, target.sha256, downloaded, reused, True)

    def _fetch_local_dir(
        self, t: FileTarget, final: Path, part: Path, progress: ProgressSink, offline: bool
    ) -> FetchResult:
        if final.is_file() and final.stat().st_size == t.size:
            progress.start_file(f"{t.name} (verifying)", t.size, 0)
            try:
                if _checked_sha256(final, t.sha256, progress) == t.sha256:
                    self._write_local_metadata(t)
                    return FetchResult(final, t.sha256, 0, t.size, True)
            finally:
                progress.end_file()
        final.parent.mkdir(parents=True, exist_ok=True)
        downloaded, reused = self._download(t, part, final, progress)
        self._write_local_metadata(t)
        return FetchResult(final, t.sha256, downloaded, reused, True)

    def _write_local_metadata(self, t: FileTarget) -> None:
        # So `hf download --local-dir` sees the file as current (same commit and etag).
        assert t.local_dir is not None
        with contextlib.suppress(ImportError, OSError):
            from huggingface_hub._local_folder import write_download_metadata

            write_download_metadata(t.local_dir, t.name, t.commit, t.sha256)

    def _check_existing(
        self, t: FileTarget, path: Path, progress: ProgressSink, *, remove_on_mismatch: bool
    ) -> None:
        progress.start_file(f"{t.name} (verifying)", t.size, 0)
        try:
            actual = _checked_sha256(path, t.sha256, progress)
        finally:
            progress.end_file()
        if actual != t.sha256:
            if remove_on_mismatch:
                path.unlink(missing_ok=True)
            raise ChecksumMismatch(t.name, t.sha256, actual, str(path))

    def _adopt_partials(self, part: Path) -> None:
        """Keep the longest plain partial of this blob as ours; drop the others."""
        foreign = [p for p in self._foreign_partials(part) if p.is_file()]
        if not foreign:
            return
        ours = part.stat().st_size if part.exists() else -1
        best = max(foreign, key=lambda p: p.stat().st_size)
        if best.stat().st_size > ours and not part.with_name(part.name + ".progress").exists():
            best.replace(part)
            foreign.remove(best)
        for p in foreign:
            p.unlink(missing_ok=True)

    def _download(
        self, t: FileTarget, part: Path, dest: Path, progress: ProgressSink
    ) -> tuple[int, int]:
        """Fetch into `part`, verify, rename to `dest`; (bytes downloaded, bytes reused)."""
        url = hf_hub_url(t.repo_id, t.name, revision=t.commit, endpoint=self.endpoint)
        headers = build_hf_headers(token=self.token)
        self._adopt_partials(part)
        blocks = _Blocks(part, t.size, self.block_bytes)
        reused = sum(blocks.done)
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        connections = self.connections or choose_connections(t.size)
        transfer = _Transfer(url, headers, blocks, connections, progress, self.direct_reads)
        progress.start_file(t.name, t.size, reused)
        try:
            with _translated(t.repo_id, t.name):
                actual = transfer.run(fd)
        except SizeMismatch as exc:  # bytes of some other file: keep none of them
            part.unlink(missing_ok=True)
            blocks.remove()
            exc.file = f"{t.repo_id}/{t.name}"
            raise
        except RangeCut as exc:  # the retries are spent: say so in one line
            if not any(blocks.done):
                part.unlink(missing_ok=True)
                blocks.remove()
            raise ExternalUnavailable(
                _HUB,
                f"the connection for {t.repo_id}/{t.name} kept ending early ({exc})",
                "Run 'deployer pull' again: it resumes where it stopped.",
            ) from exc
        except BaseException:
            if not any(blocks.done):  # refused before any byte: leave nothing behind
                part.unlink(missing_ok=True)
                blocks.remove()
            raise
        finally:
            os.close(fd)
            blocks.close()
            progress.end_file()
        if actual != t.sha256:
            part.unlink(missing_ok=True)
            blocks.remove()
            raise ChecksumMismatch(t.name, t.sha256, actual, str(part))
        os.chmod(part, 0o644)
        part.replace(dest)
        blocks.remove()
        filememo.remember_verified(dest, t.sha256)
        return transfer.downloaded, reused

    def _link(self, t: FileTarget, blob: Path, pointer: Path) -> None:
        """snapshots/<commit>/<name> -> ../../blobs/<sha256>, and refs/<revision>."""
        pointer.parent.mkdir(parents=True, exist_ok=True)
        rel = os.path.relpath(blob, pointer.parent)
        if not (pointer.is_symlink() and os.readlink(pointer) == rel):
            tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(rel)
            tmp.replace(pointer)
        if t.revision != t.commit:
            ref = self._repo_dir(t.repo_id) / "refs" / t.revision
            contained(self._repo_dir(t.repo_id) / "refs", t.revision)
            ref.parent.mkdir(parents=True, exist_ok=True)
            if not ref.is_file() or ref.read_text() != t.commit:
                tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
                tmp.write_text(t.commit)
                tmp.replace(ref)


def iter_partials(cache_dir: Path) -> Iterator[Path]:
    """Every partial download (ours and huggingface_hub's) in a cache, for tests and doctors."""
    yield from cache_dir.glob("*/blobs/*.incomplete")
