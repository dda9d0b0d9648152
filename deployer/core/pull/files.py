"""`deployer pull`: resolve a model to exact files, check everything before a byte moves, report.

The decisions live here (which files, name safety, disk margin, licence consent, the result);
the bytes move through a HubStore passed in (deployer/adapters/download.py is the real one), so
core never imports the Hub SDK.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from deployer.core.clock import Clock
from deployer.core.errors import (
    ChecksumMismatch,
    GGUFReadError,
    InvalidRequest,
    LicenseNotAccepted,
    ModelNotFound,
    NotEnoughDisk,
    NotFoundError,
    OfflineMissing,
    UnsafeRepoPath,
)
from deployer.core.errors import QuantNotFound as _QuantNotFound
from deployer.core.model.catalog import get_model, get_quant
from deployer.core.model.ref import (
    DEMO_REF,
    HF_PREFIX,
    CatalogRef,
    DemoRef,
    HubRef,
    LocalRef,
    ModelRef,
    as_model_ref,
    split_part_names,
    split_parts,
)
from deployer.core.model.resolve import (
    DEMO_QUANT,
    RemoteFile,
    quant_label,
    select_files,
)
from deployer.core.pull.hub_checks import check_quant, check_revision, repo_path_problem
from deployer.core.units import GIB

DEMO_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
DEFAULT_REVISION = "main"
MARGIN_FRACTION = 0.05
MARGIN_MIN_BYTES = GIB
_GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class RepoListing:
    """A repo at one commit: every file with size and (for LFS files) sha256."""

    repo_id: str
    commit: str
    files: list[RemoteFile]
    gated: bool = False


@dataclass(frozen=True)
class FileTarget:
    """One file to place: where it comes from and what its bytes must hash to."""

    repo_id: str
    commit: str
    revision: str
    name: str
    size: int
    sha256: str
    local_dir: Path | None = None


@dataclass(frozen=True)
class FetchResult:
    """What a HubStore did for one file."""

    path: Path
    sha256: str
    bytes_downloaded: int
    bytes_reused: int
    verified: bool


class ProgressSink(Protocol):
    """Byte progress; advance() may be called from several threads."""

    def start_file(self, name: str, total_bytes: int, done_bytes: int) -> None:
        """A file begins (done_bytes already on disk)."""
        ...

    def advance(self, n_bytes: int) -> None:
        """n_bytes more arrived."""
        ...

    def end_file(self) -> None:
        """The current file is finished (or failed)."""
        ...


class LocalFiles(Protocol):
    """This machine's files, as pull reads them (deployer.adapters.local_files.LocalDisk)."""

    def is_file(self, path: Path) -> bool:
        """Whether `path` is a regular file (links followed)."""
        ...

    def resolved(self, path: Path) -> Path:
        """`path` made absolute, links resolved."""
        ...

    def size_bytes(self, path: Path) -> int:
        """The size of the file at `path`."""
        ...

    def sha256(self, path: Path, progress: ProgressSink | None = None) -> str:
        """The sha256 of the file at `path`."""
        ...

    def free_bytes(self, path: Path) -> int:
        """Free bytes on the file system `path` is (or would be) on."""
        ...

    def demo_sha256(self) -> str:
        """The sha256 the demo model's package expects (DEMO_SHA256 when it names none)."""
        ...

    def demo_path(self) -> Path:
        """The demo model's file, assembled and sha256-checked by its package."""
        ...

    def check_gguf(self, path: Path) -> None:
        """Refuse (GGUFReadError) a file that is no GGUF or is shorter than its tensor table."""
        ...


class NullProgress:
    """Progress that shows nothing."""

    def start_file(self, name: str, total_bytes: int, done_bytes: int) -> None:
        """Nothing."""

    def advance(self, n_bytes: int) -> None:
        """Nothing."""

    def end_file(self) -> None:
        """Nothing."""


class HubStore(Protocol):
    """The Hub plus the local cache, as pull needs them."""

    def cache_root(self) -> Path:
        """Where blobs are written (for the disk-space check)."""
        ...

    def list_repo(self, repo_id: str, revision: str | None) -> RepoListing:
        """The repo's files at `revision`, pinned to a commit (network)."""
        ...

    def cached_listing(self, repo_id: str, revision: str | None) -> RepoListing | None:
        """The files of the cached snapshot for `revision`, or None (no network)."""
        ...

    def present_bytes(self, target: FileTarget) -> int:
        """Bytes of `target` already on disk: its size when complete, else a reusable prefix."""
        ...

    def clean_stale(self, repo_id: str, keep_sha256: set[str]) -> int:
        """Remove partial downloads of this repo that no current file can use; bytes freed."""
        ...

    def fetch(self, target: FileTarget, progress: ProgressSink, *, offline: bool) -> FetchResult:
        """Place `target` (download, resume or reuse), verified against its sha256."""
        ...


@dataclass(frozen=True)
class PulledFile:
    """One file of the result; the first four fields are the JSON contract."""

    path: str
    bytes: int
    sha256: str
    verified: bool
    repo_file: str | None = None
    bytes_downloaded: int = 0


@dataclass
class PullResult:
    """The outcome of a pull."""

    model: str
    source: str
    files: list[PulledFile]
    revision: str | None
    seconds: float
    bytes_downloaded: int
    bytes_reused: int
    repo_id: str | None = None
    quant: str | None = None
    bytes_cleaned: int = 0
    license: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (fields are added over time, never renamed)."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data

    @property
    def path(self) -> Path:
        """The file to give llama.cpp (the first part of a split set)."""
        return Path(self.files[0].path)


def check_repo_filename(repo_id: str, name: str) -> None:
    """Refuse names that could escape the snapshot or target dir (hub_checks' one rule)."""
    problem = repo_path_problem(name)
    if problem:
        raise UnsafeRepoPath(repo_id, name, f"its name {problem}")


def required_free_bytes(to_fetch: int) -> int:
    """What must be free before fetching `to_fetch` bytes: plus 5%, at least 1 GiB extra."""
    if to_fetch <= 0:
        return 0
    return to_fetch + max(int(to_fetch * MARGIN_FRACTION), MARGIN_MIN_BYTES)


def check_disk_space(where: Path, to_fetch: int, free_bytes: Callable[[Path], int]) -> None:
    """Refuse before the first byte when the download (plus margin) cannot fit."""
    need = required_free_bytes(to_fetch)
    have = free_bytes(where)
    if need > have:
        raise NotEnoughDisk(str(where), need, have)


def _local_file(path: Path, files: LocalFiles) -> PulledFile:
    # A GGUF, no shorter than its own tensor table (a cut copy would fail in llama-server).
    files.check_gguf(path)
    sha = files.sha256(path)
    return PulledFile(str(path), files.size_bytes(path), sha, False)


def _pull_local(ref: LocalRef, files: LocalFiles, clock: Clock, started: float) -> PullResult:
    path = files.resolved(ref.path)
    if not files.is_file(path):
        err = ModelNotFound(ref.text, [])
        err.hint = f"No such file: {path}"
        raise err
    parts = split_parts(path)
    for part in parts:
        if not files.is_file(part):
            raise GGUFReadError(str(path), f"split set part missing: {part}")
    pulled = [_local_file(p, files) for p in parts]
    return PullResult(
        ref.text,
        "local",
        pulled,
        None,
        clock.monotonic() - started,
        0,
        sum(f.bytes for f in pulled),
    )


def _pull_demo(quant: str | None, files: LocalFiles, clock: Clock, started: float) -> PullResult:
    if quant and quant.upper() != DEMO_QUANT:
        raise _QuantNotFound(quant, [DEMO_QUANT], DEMO_REF)
    expected = files.demo_sha256()
    try:
        path = files.demo_path()
    except (FileExistsError, ValueError) as exc:  # the package's own check failed
        raise ChecksumMismatch("demo", expected, f"unknown ({exc})") from None
    # The package's assemble() has just checked the file against this same sha256.
    pulled = PulledFile(str(path), files.size_bytes(path), expected, True)
    return PullResult(
        DEMO_REF,
        "demo",
        [pulled],
        None,
        clock.monotonic() - started,
        0,
        pulled.bytes,
        quant=DEMO_QUANT,
        license={"id": "gemma", "url": "https://ai.google.dev/gemma/terms"},
    )


@dataclass(frozen=True)
class _HubRequest:
    model: str
    source: str
    repo_id: str
    revision: str | None
    quant: str | None
    names: list[str] | None  # exact files (catalog); None: choose by quant from the listing
    license: dict[str, Any] | None = None


def _hub_request(
    ref: HubRef | CatalogRef, quant: str | None, revision: str | None, accept_license: bool
) -> _HubRequest:
    # The revision becomes a path (refs/<revision>) and part of a URL; the quant is shown in
    # messages: both are checked here, before anything is asked or written.
    revision = check_revision(revision, "--revision") if revision is not None else None
    quant = check_quant(quant, "--quant") if quant is not None else None
    if isinstance(ref, HubRef):
        parsed = ref
        if parsed.revision and revision and parsed.revision != revision:
            raise InvalidRequest(
                f"two revisions given: '{parsed.revision}' in the reference and '{revision}'",
                "Give one.",
            )
        wanted = parsed.quant or quant
        return _HubRequest(
            ref.text, "hf", parsed.repo_id, parsed.revision or revision, wanted, None, None
        )
    model = get_model(ref.text)
    label, qf = get_quant(model, quant or model.default_quant)
    lic = model.license
    if lic.restricts_use and not accept_license:
        raise LicenseNotAccepted(model.id, lic.id, lic.url)
    names = split_part_names(qf.file, qf.split_parts)
    info = {"id": lic.id, "url": lic.url, "gated": lic.gated, "restricts_use": lic.restricts_use}
    return _HubRequest(model.id, "catalog", qf.repo, revision, label, names, info)


def _choose_files(req: _HubRequest, listing: RepoListing, offline: bool) -> list[RemoteFile]:
    by_name = {f.name: f for f in listing.files}
    revision = req.revision or DEFAULT_REVISION
    if req.names is not None:
        missing = [n for n in req.names if n not in by_name]
        if missing and offline:
            raise OfflineMissing(req.repo_id, revision, missing)
        if missing:
            raise NotFoundError(
                "file",
                f"hf://{req.repo_id}/{missing[0]}",
                [],
                f"The catalog entry may be stale; try 'deployer pull hf://{req.repo_id}:{req.quant}'.",
            )
        return [by_name[n] for n in req.names]
    try:
        return select_files(listing.files, req.quant, f"{HF_PREFIX}{req.repo_id}")
    except (_QuantNotFound, ModelNotFound):
        if offline:
            what = f"the {req.quant or 'default'} .gguf file(s)"
            raise OfflineMissing(req.repo_id, revision, [what]) from None
        raise


def _pull_hub(
    req: _HubRequest,
    store: HubStore,
    *,
    local_dir: Path | None,
    offline: bool,
    free_bytes: Callable[[Path], int],
    progress: ProgressSink,
    clock: Clock,
    started: float,
) -> PullResult:
    revision = req.revision or DEFAULT_REVISION
    cleaned = 0
    if offline:
        listing = store.cached_listing(req.repo_id, req.revision)
        if listing is None:
            raise OfflineMissing(req.repo_id, revision, req.names or [], str(store.cache_root()))
    else:
        listing = store.list_repo(req.repo_id, req.revision)
    chosen = _choose_files(req, listing, offline)
    targets: list[FileTarget] = []
    for f in chosen:
        check_repo_filename(req.repo_id, f.name)
        if not f.sha256:
            raise UnsafeRepoPath(
                req.repo_id, f.name, "the Hub lists no sha256, so it cannot be verified"
            )
        targets.append(
            FileTarget(req.repo_id, listing.commit, revision, f.name, f.size, f.sha256, local_dir)
        )
    present = [min(store.present_bytes(t), t.size) for t in targets]
    if offline:
        missing = [t.name for t, have in zip(targets, present, strict=True) if have < t.size]
        if missing:
            raise OfflineMissing(req.repo_id, revision, missing, str(store.cache_root()))
    else:
        keep = {f.sha256 for f in listing.files if f.sha256}
        cleaned = store.clean_stale(req.repo_id, keep)
        to_fetch = sum(t.size - have for t, have in zip(targets, present, strict=True))
        check_disk_space(local_dir or store.cache_root(), to_fetch, free_bytes)
    results = [store.fetch(t, progress, offline=offline) for t in targets]
    files = [
        PulledFile(str(r.path), t.size, r.sha256, r.verified, t.name, r.bytes_downloaded)
        for t, r in zip(targets, results, strict=True)
    ]
    return PullResult(
        req.model,
        req.source,
        files,
        listing.commit,
        clock.monotonic() - started,
        sum(r.bytes_downloaded for r in results),
        sum(r.bytes_reused for r in results),
        repo_id=req.repo_id,
        quant=req.quant or quant_label(targets[0].name),
        bytes_cleaned=cleaned,
        license=req.license,
    )


def pull_model(
    ref: ModelRef | str,
    quant: str | None = None,
    *,
    store: HubStore | None = None,
    revision: str | None = None,
    local_dir: Path | None = None,
    accept_license: bool = False,
    offline: bool = False,
    free_bytes: Callable[[Path], int] | None = None,
    progress: ProgressSink | None = None,
    files: LocalFiles,
    clock: Clock,
) -> PullResult:
    """Make `ref` (catalog id, hf://ORG/REPO[:QUANT][@REV], .gguf path, demo) present and verified.

    `files` and `clock` are this machine's (deployer.adapters.local_files, adapters.clock);
    `free_bytes` replaces `files.free_bytes` for the disk-space check."""
    started = clock.monotonic()
    ref = as_model_ref(ref)
    if isinstance(ref, DemoRef):
        return _pull_demo(quant, files, clock, started)
    if isinstance(ref, LocalRef):
        return _pull_local(ref, files, clock, started)
    req = _hub_request(ref, quant, revision, accept_license)
    if store is None:
        raise InvalidRequest("pulling from the Hub needs a HubStore")
    if local_dir is not None:
        local_dir = files.resolved(local_dir.expanduser())
    return _pull_hub(
        req,
        store,
        local_dir=local_dir,
        offline=offline,
        free_bytes=free_bytes or files.free_bytes,
        progress=progress or NullProgress(),
        clock=clock,
        started=started,
    )


def remote_targets(
    ref: HubRef | CatalogRef | str,
    quant: str | None,
    store: HubStore,
    *,
    revision: str | None = None,
    accept_license: bool = False,
) -> list[FileTarget]:
    """The exact Hub files `ref` needs, pinned to a commit, with sizes and sha256, fetching
    nothing: for hosts that download the weights themselves (deployer fleet)."""
    parsed = as_model_ref(ref)
    if not isinstance(parsed, HubRef | CatalogRef):
        raise InvalidRequest(f"{parsed.text} is on this machine: there is nothing to fetch")
    req = _hub_request(parsed, quant, revision, accept_license)
    listing = store.list_repo(req.repo_id, req.revision)
    targets = []
    for f in _choose_files(req, listing, offline=False):
        check_repo_filename(req.repo_id, f.name)
        if not f.sha256:
            raise UnsafeRepoPath(
                req.repo_id, f.name, "the Hub lists no sha256, so it cannot be verified"
            )
        rev = req.revision or DEFAULT_REVISION
        targets.append(FileTarget(req.repo_id, listing.commit, rev, f.name, f.size, f.sha256))
    return targets


def pull_hub_file(
    repo_id: str,
    filename: str | None,
    revision: str | None,
    *,
    store: HubStore,
    files: LocalFiles,
    clock: Clock,
    progress: ProgressSink | None = None,
) -> PullResult:
    """One file of a Hub repo (a LoRA adapter) present and verified like a model's weights:
    `filename` exactly, or without one the repo's single .gguf file."""
    names = [filename] if filename is not None else None
    label = f"{HF_PREFIX}{repo_id}" + (f"/{filename}" if filename else "")
    req = _HubRequest(label, "hf", repo_id, revision, None, names, None)
    started = clock.monotonic()
    return _pull_hub(
        req, store, local_dir=None, offline=False, free_bytes=files.free_bytes,
        progress=progress or NullProgress(), clock=clock, started=started,
    )  # fmt: skip
