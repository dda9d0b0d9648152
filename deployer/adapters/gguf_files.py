"""Local GGUF files read for their headers: each file is mapped (so only the header's pages are
read), parsed by deployer.core.model.gguf_header.parse_header and turned into ModelFacts by
deployer.core.model.gguf_meta; this module only opens files and measures them."""

from __future__ import annotations

import mmap
from pathlib import Path

from deployer.core.errors import GGUFReadError
from deployer.core.model.facts import ModelFacts
from deployer.core.model.gguf_header import GGUFHeader, HeaderError, parse_header
from deployer.core.model.gguf_meta import GGUFPart, check_part, facts_from_parts, part_labels


def read_header(path: Path) -> GGUFHeader:
    """Parse the header of the GGUF file at `path` (mapped, so only the header is read)."""
    with path.open("rb") as fh:
        size = path.stat().st_size
        if size == 0:
            raise HeaderError("the file is empty")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                return parse_header(view)
            finally:
                view.release()


def _open(path: Path, label: str) -> GGUFHeader:
    try:
        return read_header(path)
    except FileNotFoundError:
        raise GGUFReadError(label, "no such file") from None
    except HeaderError as exc:
        raise GGUFReadError(label, str(exc)) from None
    except OSError as exc:
        raise GGUFReadError(label, exc.strerror or str(exc)) from None


def _read_part(path: Path, label: str) -> GGUFPart:
    header = _open(path, label)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise GGUFReadError(label, exc.strerror or str(exc)) from None
    part = GGUFPart(header, size, label)
    check_part(part)
    return part


def gguf_header_bytes(path: Path) -> int:
    """Offset of the tensor data: how many leading bytes hold the whole header."""
    return _open(path, str(path)).data_offset


def check_gguf_file(path: Path) -> None:
    """Refuse a local GGUF that is not one, or shorter than its own tensor table (cut short)."""
    _read_part(path, str(path))


def facts_from_gguf(
    path: Path,
    name: str | None = None,
    source: str | None = None,
    total_file_bytes: int | None = None,
) -> ModelFacts:
    """ModelFacts from one GGUF file's header (for a split set, see facts_from_gguf_parts)."""
    return facts_from_gguf_parts([path], name, source, total_file_bytes)


def facts_from_gguf_parts(
    paths: list[Path],
    name: str | None = None,
    source: str | None = None,
    total_file_bytes: int | None = None,
) -> ModelFacts:
    """ModelFacts from a split set: keys from the first part, tensor tables from all parts."""
    if not paths:
        raise ValueError("facts_from_gguf_parts needs at least one path")
    labels = part_labels(paths, source)
    later = (_read_part(p, label) for p, label in zip(paths[1:], labels[1:], strict=True))
    return facts_from_parts(
        _read_part(paths[0], labels[0]),
        later,  # read only once the first part's split.count agrees
        n_parts=len(paths),
        stem=paths[0].stem,
        name=name,
        source=source or str(paths[0]),
        total_file_bytes=total_file_bytes,
    )
