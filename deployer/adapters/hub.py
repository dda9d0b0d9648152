"""The Hugging Face Hub: list a repo's files and read GGUF headers without the weights.

A listing is where the Hub's values enter: every file name, size, sha256, blob id and the
commit are checked to their exact form here (listed_files), so nothing downstream builds a
path or a URL from a value the Hub could have chosen to escape with. A header is fetched with
HTTP Range requests (4 MiB, then as much as the header walk says it needs, at least doubling)
and walked as it arrives (deployer.core.model.gguf_extent), so a header that lies about a length or
never ends stops at MAX_HEADER_BYTES; the prefix is then written into a sparse temp file as
long as the remote file, so GGUFReader's memory map sees the real header and holes where the
tensor data would be. Hub SDK errors become deployer's own error types here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from huggingface_hub import HfApi, get_session, hf_hub_url, hf_raise_for_status
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

from deployer.adapters.gguf_files import facts_from_gguf_parts
from deployer.core.errors import (
    ExternalUnavailable,
    GatedRepo,
    GGUFReadError,
    ModelNotFound,
    NotFoundError,
)
from deployer.core.model.facts import ModelFacts
from deployer.core.model.gguf_extent import HeaderBudget, HeaderWalk
from deployer.core.model.resolve import RemoteFile
from deployer.core.pull.files import RepoListing
from deployer.core.pull.hub_checks import (
    HUB_HINT,
    check_blob_id,
    check_repo_path,
    check_size,
    listing_source,
)
from deployer.core.untrusted import CONTROL_RE, UntrustedValue, check_commit, check_sha256, shown

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import TransportError  # type: ignore[no-redef]

FIRST_READ_BYTES = 4 * 1024 * 1024
_TIMEOUT_S = 60.0
_HUB = "Hugging Face Hub"
_SDK_TEXT_MAX = 300


def _line_of(exc: BaseException, last: bool = False) -> str:
    """One line of an SDK error, safe to print: the server may have written part of it."""
    lines = str(exc).splitlines() or [type(exc).__name__]
    return CONTROL_RE.sub("?", lines[-1 if last else 0])[:_SDK_TEXT_MAX]


@contextmanager
def _translated(repo_id: str, filename: str | None = None) -> Iterator[None]:
    """Re-raise Hub SDK errors as deployer errors."""
    try:
        yield
    except GatedRepoError:
        raise GatedRepo(repo_id) from None
    except RepositoryNotFoundError:
        raise ModelNotFound(f"hf://{repo_id}", []) from None
    except RevisionNotFoundError as exc:
        raise NotFoundError("revision", f"hf://{repo_id}", [], _line_of(exc, last=True)) from None
    except EntryNotFoundError:
        raise NotFoundError("file", f"hf://{repo_id}/{filename}", []) from None
    except HfHubHTTPError as exc:
        raise ExternalUnavailable(_HUB, _line_of(exc)) from exc
    except (TransportError, OSError) as exc:
        raise ExternalUnavailable(_HUB, _line_of(exc), "Check the network or HF_ENDPOINT.") from exc


def listed_files(repo_id: str, siblings: Iterable[object]) -> list[RemoteFile]:
    """The listing's files, each name, size, sha256 and blob id checked to its exact form.

    Any entry that fails refuses the whole listing (UntrustedValue naming the repo and the
    file): a Hub that serves one escaping name is not trusted for the others.
    """
    source = listing_source(repo_id)
    files: list[RemoteFile] = []
    seen: set[str] = set()
    for sib in siblings:
        try:
            files.append(_listed_file(repo_id, source, sib))
        except UntrustedValue as exc:
            exc.hint = exc.hint or HUB_HINT
            raise
        if files[-1].name in seen:
            raise UntrustedValue(source, "file name", files[-1].name, "is listed twice", HUB_HINT)
        seen.add(files[-1].name)
    return files


def _listed_file(repo_id: str, source: str, sib: object) -> RemoteFile:
    name = check_repo_path(repo_id, getattr(sib, "rfilename", None))
    of = f"of {shown(name)}"
    size = check_size(getattr(sib, "size", None), source, f"size {of}")
    blob_id = getattr(sib, "blob_id", None)
    if blob_id is not None:
        check_blob_id(blob_id, source, f"blob id {of}")
    lfs = getattr(sib, "lfs", None)
    if lfs is None:
        return RemoteFile(name, size)
    lfs_size = check_size(getattr(lfs, "size", None), source, f"LFS size {of}")
    if lfs_size != size:
        raise UntrustedValue(source, f"LFS size {of}", str(lfs_size), f"differs from {size}")
    return RemoteFile(
        name, size, check_sha256(getattr(lfs, "sha256", None), source, f"sha256 {of}")
    )


def fetch_listing(
    repo_id: str,
    revision: str | None,
    *,
    endpoint: str | None = None,
    token: str | None = None,
) -> RepoListing:
    """Every file of the repo at `revision`, with sizes and sha256, pinned to its commit."""
    with _translated(repo_id):
        try:
            info = HfApi(endpoint=endpoint, token=token).model_info(
                repo_id, revision=revision, files_metadata=True
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # huggingface_hub builds its ModelInfo from the JSON as given: a shape it did not
            # expect fails there, and is the Hub's fault, not ours
            raise UntrustedValue(
                listing_source(repo_id), "answer", _line_of(exc), "is malformed", HUB_HINT
            ) from None
    source = listing_source(repo_id)
    try:
        commit = check_commit(info.sha, source)
    except UntrustedValue as exc:
        exc.hint = HUB_HINT
        raise
    return RepoListing(
        repo_id, commit, listed_files(repo_id, info.siblings or []), bool(info.gated)
    )


def list_gguf_files(
    repo_id: str, revision: str | None = None, *, endpoint: str | None = None
) -> list[RemoteFile]:
    """The repo's .gguf files with exact sizes and LFS sha256 (the listing checked whole)."""
    listing = fetch_listing(repo_id, revision, endpoint=endpoint)
    return [f for f in listing.files if f.name.lower().endswith(".gguf")]


def _fetch_range(url: str, start: int, end: int, token: str | None) -> bytes:
    """Bytes start..end (inclusive); reads no further even if the server ignores Range."""
    headers = build_hf_headers(token=token)
    headers.update({"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"})
    want = end - start + 1
    with get_session().stream("GET", url, headers=headers, timeout=_TIMEOUT_S) as resp:
        hf_raise_for_status(resp)
        skip = start if resp.status_code == 200 else 0
        chunks: list[bytes] = []
        got = 0
        for chunk in resp.iter_bytes():
            if skip:
                cut = min(skip, len(chunk))
                chunk, skip = chunk[cut:], skip - cut
            chunks.append(chunk[: want - got])
            got += len(chunks[-1])
            if got >= want:
                break
    data = b"".join(chunks)
    if len(data) != want:
        raise ExternalUnavailable(_HUB, f"short read: {len(data)} of {want} bytes from {url}")
    return data


def read_remote_header(
    repo_id: str,
    filename: str,
    revision: str | None,
    size: int,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    dest_dir: Path | None = None,
    budget: HeaderBudget | None = None,
) -> Path:
    """A sparse local copy of a remote GGUF holding only its header; the caller deletes it.

    At most MAX_HEADER_BYTES are fetched (for all files sharing `budget` together), whatever
    the header declares; what it declares past that is refused before it is fetched.
    """
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    walk = HeaderWalk(f"hf://{repo_id}/{filename}", size, budget)
    have = 0
    while walk.length is None:
        want = min(max(walk.need, 2 * have, FIRST_READ_BYTES), size, walk.cap)
        with _translated(repo_id, filename):
            data = _fetch_range(url, have, want - 1, token)
        have = want
        walk.feed(data)
    fd, name = tempfile.mkstemp(prefix="deployer-header-", suffix=".gguf", dir=dest_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "r+b") as fh:
            fh.write(walk.buf)
            os.truncate(path, size)  # holes where the tensor data are: no disk, no download
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


class HfHubReader:
    """The real HubReader for deployer.core.model.resolve."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        dest_dir: Path | None = None,
    ) -> None:
        self.endpoint, self.token, self.dest_dir = endpoint, token, dest_dir

    def list_gguf_files(self, repo_id: str, revision: str | None = None) -> list[RemoteFile]:
        """All .gguf files of a repo."""
        return list_gguf_files(repo_id, revision, endpoint=self.endpoint)

    def read_header_facts(
        self,
        repo_id: str,
        files: list[RemoteFile],
        revision: str | None = None,
        *,
        name: str,
        source: str,
    ) -> ModelFacts:
        """ModelFacts from the headers of one file or every part of a split set."""
        paths: list[Path] = []
        budget = HeaderBudget()  # one model: every part of a split set shares the limits
        try:
            for f in files:
                paths.append(
                    read_remote_header(
                        repo_id,
                        f.name,
                        revision,
                        f.size,
                        endpoint=self.endpoint,
                        token=self.token,
                        dest_dir=self.dest_dir,
                        budget=budget,
                    )
                )
            total = sum(f.size for f in files)
            try:
                return facts_from_gguf_parts(paths, name, source, total_file_bytes=total)
            except GGUFReadError as exc:  # name the Hub file, not our temp copy of its header
                remote = {
                    str(p): f"hf://{repo_id}/{f.name}" for p, f in zip(paths, files, strict=True)
                }
                raise GGUFReadError(remote.get(exc.source, source), exc.problem) from None
        finally:
            for path in paths:
                with suppress(OSError):
                    path.unlink()
