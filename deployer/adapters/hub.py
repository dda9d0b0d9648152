"""The Hugging Face Hub: list a repo's GGUF files and read their headers without the weights.

A header is fetched with HTTP Range requests (4 MiB, then doubling) into a sparse temp file
as long as the remote file, so GGUFReader's memory map sees the real header and holes where
the tensor data would be. Hub SDK errors become deployer's own error types here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
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

from deployer.core.arch import ModelFacts
from deployer.core.errors import (
    ExternalUnavailable,
    GGUFReadError,
    ModelNotFound,
    NotFoundError,
)
from deployer.core.gguf_meta import facts_from_gguf_parts, gguf_header_bytes
from deployer.core.hub_errors import GatedRepo
from deployer.core.resolve import RemoteFile

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import TransportError  # type: ignore[no-redef]

FIRST_READ_BYTES = 4 * 1024 * 1024
_TIMEOUT_S = 60.0
_HUB = "Hugging Face Hub"
_GGUF_MAGIC = b"GGUF"


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
        raise NotFoundError("revision", f"hf://{repo_id}", [], str(exc).splitlines()[-1]) from None
    except EntryNotFoundError:
        raise NotFoundError("file", f"hf://{repo_id}/{filename}", []) from None
    except HfHubHTTPError as exc:
        raise ExternalUnavailable(_HUB, str(exc).splitlines()[0]) from exc
    except (TransportError, OSError) as exc:
        raise ExternalUnavailable(
            _HUB, str(exc) or type(exc).__name__, "Check the network or HF_ENDPOINT."
        ) from exc


def list_gguf_files(
    repo_id: str, revision: str | None = None, *, endpoint: str | None = None
) -> list[RemoteFile]:
    """The repo's .gguf files with exact sizes and LFS sha256."""
    with _translated(repo_id):
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True)
    found = []
    for sib in info.siblings or []:
        if not sib.rfilename.lower().endswith(".gguf"):
            continue
        size = sib.lfs.size if sib.lfs else sib.size
        if size is None:
            raise ExternalUnavailable(_HUB, f"no size listed for {repo_id}/{sib.rfilename}")
        found.append(RemoteFile(sib.rfilename, int(size), sib.lfs.sha256 if sib.lfs else None))
    return found


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


def _header_complete(path: Path, have: int, size: int) -> bool:
    try:
        return gguf_header_bytes(path) <= have
    except GGUFReadError:
        if have >= size:
            raise
        return False  # the parse ran into the holes: fetch more


def read_remote_header(
    repo_id: str,
    filename: str,
    revision: str | None,
    size: int,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    dest_dir: Path | None = None,
) -> Path:
    """A sparse local copy of a remote GGUF holding only its header; the caller deletes it."""
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    fd, name = tempfile.mkstemp(prefix="deployer-header-", suffix=".gguf", dir=dest_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "r+b") as fh:
            os.truncate(path, size)  # holes where the tensor data are: no disk, no download
            have, want = 0, min(FIRST_READ_BYTES, size)
            while True:
                with _translated(repo_id, filename):
                    data = _fetch_range(url, have, want - 1, token)
                if have == 0 and not data.startswith(_GGUF_MAGIC):
                    raise GGUFReadError(f"hf://{repo_id}/{filename}", "not a GGUF file")
                fh.seek(have)
                fh.write(data)
                fh.flush()
                have = want
                if _header_complete(path, have, size):
                    return path
                want = min(want * 2, size)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class HfHubReader:
    """The real HubReader for deployer.core.resolve."""

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
                    )
                )
            total = sum(f.size for f in files)
            return facts_from_gguf_parts(paths, name, source, total_file_bytes=total)
        finally:
            for path in paths:
                with suppress(OSError):
                    path.unlink()
