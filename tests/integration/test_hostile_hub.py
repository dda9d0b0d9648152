"""A hostile Hub: listings and headers that lie, traverse or never end, against the real CLI.

Every scenario runs `deployer pull` or `deployer plan` in a subprocess (real exit codes, real
stderr, its own memory) against the loopback Hub with one lie switched on, and asserts: one
`error:` line and a non-zero exit (or, where the lie cannot matter, a verified result), no
traceback, bounded time and memory, and nothing written or removed outside the Hugging Face
cache: the served files, a "victim" folder and a private TMPDIR are compared before and after.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from deployer.core.model.gguf_extent import MAX_HEADER_BYTES
from tests.integration.hubserver import LoopbackHub

MiB = 1024 * 1024
REPO = "evil/model"
NAME = "model-Q4_K_M.gguf"
PROFILE = ["--profile", "cpu-x86-16c-64gb"]
# What a CLI run may take: the process start (~2 s here) plus a few seconds of work.
TIME_LIMIT_S = 60.0
# Peak RSS of one run: the CLI with numpy and the Hub client is ~75 MiB; a header read is
# capped at MAX_HEADER_BYTES. Reading a 512 MiB file into memory shows as well over this.
RSS_LIMIT_BYTES = 100 * MiB + 2 * MAX_HEADER_BYTES
# Where deployer may write in a test: the HF cache and its own config/state/cache dirs.
ALLOWED = ("hf/hub", "state", "cache", "config")


@dataclass
class Run:
    """One CLI run as a user sees it."""

    code: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_bytes: int


@pytest.fixture(autouse=True)
def private_tmpdir(tmp_path: Path) -> Path:
    """The TMPDIR of every run: it must be empty again afterwards."""
    path = tmp_path / "tmpdir"
    path.mkdir()
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim" / "important.txt"
    path.parent.mkdir()
    path.write_text("keep me\n")
    return path


def gguf_file(path: Path, size: int = 256 * 1024) -> Path:
    """Bytes that start like a GGUF (distinct, so corruption shows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + os.urandom(size - 4))
    return path


def tree(root: Path) -> dict[str, str]:
    """Every path under root that deployer must not touch, with a digest of its content."""
    seen: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(rel == a or rel.startswith(a + "/") or a.startswith(rel + "/") for a in ALLOWED):
            continue  # an allowed folder, inside one, or a folder on the way to one
        if path.is_symlink():
            seen[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            seen[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            seen[rel] = "dir"
    return seen


# The console entry point, writing its own peak RSS (VmHWM: this process image only, unlike a
# child's ru_maxrss, which also counts the test process it was forked from) when it exits.
_MAIN = """
import atexit, os

def _peak() -> None:
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["HOSTILE_HUB_PEAK_FILE"], "w") as out:
        out.write(kib)

atexit.register(_peak)
from deployer.cli.app import main
main()
"""


def cli(tmp_path: Path, *args: str) -> Run:
    """Run the real console entry point; measure its time and peak memory."""
    peak = tmp_path / "peak-kib"
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path / "tmpdir"),
        "COLUMNS": "200",
        "HOSTILE_HUB_PEAK_FILE": str(peak),
    }
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _MAIN, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=TIME_LIMIT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args} ran past {TIME_LIMIT_S} s")
    seconds = time.monotonic() - started
    peak_bytes = int(peak.read_text()) * 1024
    peak.unlink()
    return Run(proc.returncode, proc.stdout, proc.stderr, seconds, peak_bytes)


def refused(run: Run, *needles: str) -> str:
    """The run failed with exactly one `error:` line holding every needle."""
    assert run.code != 0, run.stdout
    assert "Traceback" not in run.stderr, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, run.stderr
    assert all(not ln.startswith(" ") for ln in lines), run.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def contained(tmp_path: Path, before: dict[str, str], run: Run) -> None:
    """Nothing outside the allowed folders changed; the run stayed within time and memory."""
    assert tree(tmp_path) == before
    assert not list((tmp_path / "tmpdir").iterdir())
    assert run.max_rss_bytes < RSS_LIMIT_BYTES, f"peak RSS {run.max_rss_bytes / MiB:.0f} MiB"


def no_blobs(tmp_path: Path) -> None:
    """Refused before a byte moved: no blob or partial in the cache."""
    assert not list((tmp_path / "hf" / "hub").glob("*/blobs/*"))


# -- listing values that reach a path --------------------------------------------------------

SHA_LIES: dict[str, Callable[[Path], str]] = {
    "relative traversal": lambda tmp: "../../../../victim/important.txt",
    "absolute path": lambda tmp: str(tmp / "victim" / "important.txt"),
    "upper-case hex": lambda tmp: "A" * 64,
    "short hex": lambda tmp: "a" * 63,
    "hex then traversal": lambda tmp: "a" * 64 + "/../../../../../victim/important.txt",
}


@pytest.mark.parametrize("lie", list(SHA_LIES), ids=list(SHA_LIES))
@pytest.mark.parametrize("command", ["pull", "plan"])
def test_listed_sha256_must_be_exact(
    hub: LoopbackHub, tmp_path: Path, victim: Path, lie: str, command: str
) -> None:
    repo = hub.add_repo(REPO, {NAME: gguf_file(tmp_path / "src" / NAME)})
    repo.lies.sha256[NAME] = SHA_LIES[lie](tmp_path)
    before = tree(tmp_path)
    args = [command, f"hf://{REPO}", *(PROFILE if command == "plan" else [])]
    run = cli(tmp_path, *args)
    refused(run, REPO, NAME, "sha256")
    contained(tmp_path, before, run)
    assert victim.read_text() == "keep me\n"
    no_blobs(tmp_path)
    assert hub.served(REPO, NAME) == 0


NAME_LIES = {
    "parent traversal": "../../../../victim/m-Q4_K_M.gguf",
    "absolute": "/tmp/deployer-hostile-m-Q4_K_M.gguf",
    "split part traversal": "Q4_K_M/../../../../victim/m-Q4_K_M-00001-of-00001.gguf",
    "template": "m{{ lookup('pipe','id > PWNED') }}-Q4_K_M.gguf",
    "jinja statement": "m{% raw %}-Q4_K_M.gguf",
    "newline": "m\nQ4_K_M.gguf",
    "escape sequence": "m\x1b[2J-Q4_K_M.gguf",
    "backslash": "..\\..\\m-Q4_K_M.gguf",
}


@pytest.mark.parametrize("lie", list(NAME_LIES), ids=list(NAME_LIES))
@pytest.mark.parametrize("command", ["pull", "plan"])
def test_listed_file_names_must_be_safe(
    hub: LoopbackHub, tmp_path: Path, victim: Path, lie: str, command: str
) -> None:
    name = NAME_LIES[lie]
    hub.add_repo(REPO, {name: gguf_file(tmp_path / "src" / NAME)})
    before = tree(tmp_path)
    args = [command, f"hf://{REPO}:Q4_K_M", *(PROFILE if command == "plan" else [])]
    run = cli(tmp_path, *args)
    line = refused(run, REPO)
    assert "\x1b" not in line and repr(name)[1:-1][:20] in line
    contained(tmp_path, before, run)
    assert not list(tmp_path.rglob("PWNED"))
    assert not Path("/tmp/deployer-hostile-m-Q4_K_M.gguf").exists()
    no_blobs(tmp_path)
    assert hub.served(REPO, name) == 0


@pytest.mark.parametrize(
    "commit",
    ["../../../../victim", str(Path("/tmp")), "main", "a" * 39, "A" * 40, 40],
    ids=["traversal", "absolute", "branch name", "short", "upper-case", "not text"],
)
def test_listed_commit_must_be_40_hex(
    hub: LoopbackHub, tmp_path: Path, victim: Path, commit: object
) -> None:
    repo = hub.add_repo(REPO, {NAME: gguf_file(tmp_path / "src" / NAME)})
    repo.lies.commit = commit
    before = tree(tmp_path)
    run = cli(tmp_path, "pull", f"hf://{REPO}")
    refused(run, REPO, "commit")
    contained(tmp_path, before, run)
    no_blobs(tmp_path)
    assert hub.served(REPO, NAME) == 0


SIZE_LIES: dict[str, object] = {
    "negative": -1,
    "text": "262144",
    "fraction": 262144.5,
    "boolean": True,
    "beyond any file": 1 << 62,
}


@pytest.mark.parametrize("lie", list(SIZE_LIES), ids=list(SIZE_LIES))
def test_listed_size_must_be_a_sane_int(hub: LoopbackHub, tmp_path: Path, lie: str) -> None:
    repo = hub.add_repo(REPO, {NAME: gguf_file(tmp_path / "src" / NAME)})
    repo.lies.size[NAME] = SIZE_LIES[lie]
    before = tree(tmp_path)
    run = cli(tmp_path, "pull", f"hf://{REPO}")
    refused(run, REPO, NAME, "size")
    contained(tmp_path, before, run)
    no_blobs(tmp_path)


def test_listed_blob_id_must_be_hex(hub: LoopbackHub, tmp_path: Path) -> None:
    repo = hub.add_repo(REPO, {NAME: gguf_file(tmp_path / "src" / NAME)})
    repo.lies.blob_id[NAME] = "../../../../victim"
    before = tree(tmp_path)
    run = cli(tmp_path, "pull", f"hf://{REPO}")
    refused(run, REPO, NAME, "blob id")
    contained(tmp_path, before, run)


@pytest.mark.parametrize(
    "sibling",
    [{"size": 5}, {"rfilename": 5, "size": 5}, {"rfilename": "x", "lfs": "no"}, "junk"],
    ids=["no name", "name not text", "lfs not an object", "not an object"],
)
def test_malformed_listing_entries(hub: LoopbackHub, tmp_path: Path, sibling: object) -> None:
    repo = hub.add_repo(REPO, {NAME: gguf_file(tmp_path / "src" / NAME)})
    repo.lies.siblings.append(sibling)
    before = tree(tmp_path)
    run = cli(tmp_path, "pull", f"hf://{REPO}")
    refused(run, REPO)
    contained(tmp_path, before, run)


def test_duplicate_names_in_a_listing(hub: LoopbackHub, tmp_path: Path) -> None:
    repo = hub.add_repo(REPO, {NAME: gguf_file(tmp_path / "src" / NAME)})
    repo.lies.siblings.append({"rfilename": NAME, "size": 5, "blobId": "0" * 40})
    run = cli(tmp_path, "pull", f"hf://{REPO}")
    refused(run, REPO, NAME, "twice")


# -- lies the bytes expose -------------------------------------------------------------------


@pytest.mark.parametrize("delta", [4096, -4096], ids=["listed larger", "listed smaller"])
def test_listed_size_differs_from_the_bytes(
    hub: LoopbackHub, tmp_path: Path, victim: Path, delta: int
) -> None:
    src = gguf_file(tmp_path / "src" / NAME)
    repo = hub.add_repo(REPO, {NAME: src})
    repo.lies.size[NAME] = src.stat().st_size + delta
    before = tree(tmp_path)
    run = cli(tmp_path, "pull", f"hf://{REPO}")
    refused(run, "size mismatch", NAME, str(src.stat().st_size + delta))
    contained(tmp_path, before, run)
    no_blobs(tmp_path)


def test_listed_sha256_the_bytes_do_not_hash_to(hub: LoopbackHub, tmp_path: Path) -> None:
    repo = hub.add_repo(REPO, {NAME: gguf_file(tmp_path / "src" / NAME)})
    repo.lies.sha256[NAME] = "0" * 64
    before = tree(tmp_path)
    run = cli(tmp_path, "pull", f"hf://{REPO}")
    refused(run, NAME, "0" * 64, "sha256 mismatch")
    contained(tmp_path, before, run)
    no_blobs(tmp_path)


@pytest.mark.parametrize("delta", [1000, -1000], ids=["claims more", "claims less"])
def test_lying_content_length_ends_verified_or_refused(
    hub: LoopbackHub, tmp_path: Path, delta: int
) -> None:
    """A Content-Length that lies cannot change what is accepted: the sha256 decides."""
    src = gguf_file(tmp_path / "src" / NAME)
    repo = hub.add_repo(REPO, {NAME: src})
    repo.lies.content_length_delta = delta
    before = tree(tmp_path)
    run = cli(tmp_path, "pull", f"hf://{REPO}", "--json")
    contained(tmp_path, before, run)
    repo_dir = tmp_path / "hf" / "hub" / "models--evil--model"
    if run.code == 0:
        assert [p.read_bytes() for p in (repo_dir / "blobs").iterdir()] == [src.read_bytes()]
    else:  # a partial of what did arrive may stay, to resume; never a blob or a snapshot
        refused(run)
        blobs = list((repo_dir / "blobs").glob("*"))
        assert all(".incomplete" in p.name for p in blobs), blobs
        assert not (repo_dir / "snapshots").exists()


def test_lying_repo_commit_header_is_not_used(
    hub: LoopbackHub, tmp_path: Path, victim: Path
) -> None:
    """X-Repo-Commit never names a folder: the snapshot is the listing's (checked) commit."""
    repo = hub.add_repo(REPO, {NAME: gguf_file(tmp_path / "src" / NAME)})
    repo.lies.header_commit = "../../../../victim"
    before = tree(tmp_path)
    run = cli(tmp_path, "pull", f"hf://{REPO}")
    assert run.code == 0, run.stderr
    contained(tmp_path, before, run)
    snapshots = tmp_path / "hf" / "hub" / "models--evil--model" / "snapshots"
    assert [p.name for p in snapshots.iterdir()] == [repo.commit]


# -- what the user types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["hf://evil/model", "--revision", "../../../../victim"],
        ["hf://evil/model", "--revision", "/tmp"],
        ["hf://evil/model", "--revision", "main\nx"],
        ["hf://evil/model", "--revision", "{{ x }}"],
        ["hf://evil/model@../../../../victim"],
        ["hf://evil/model:Q4_K_M@refs/../../victim"],
        ["hf://../.."],
        ["hf://a/b\nc"],
        ["hf://evil/model:Q4{{x}}"],
    ],
)
def test_user_references_and_revisions_are_checked_before_the_hub(
    hub: LoopbackHub, tmp_path: Path, victim: Path, args: list[str]
) -> None:
    hub.add_repo(REPO, {NAME: gguf_file(tmp_path / "src" / NAME)})
    before = tree(tmp_path)
    run = cli(tmp_path, "pull", *args)
    assert run.code == 2
    refused(run)
    contained(tmp_path, before, run)
    assert hub.requests == []  # refused before asking the Hub anything


# -- headers that lie or never end (plan reads only the header) ------------------------------


def _kv_header(n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, n_kv)


def _string_kv(key: bytes, declared_len: int) -> bytes:
    return struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, declared_len)


def endless_header(path: Path) -> Path:
    """A header of plausible counts whose strings go on past any cap: 100 k strings of 1 KiB."""
    item = struct.pack("<Q", 1016) + b"a" * 1016
    head = _kv_header(1) + struct.pack("<Q", 9) + b"tokenizer" + struct.pack("<IIQ", 9, 8, 100_000)
    with path.open("wb") as fh:
        fh.write(head)
        fh.write(item * ((MAX_HEADER_BYTES + 8 * MiB) // len(item)))
        fh.truncate(512 * MiB)  # the rest are holes: no disk
    return path


def giant_string(path: Path) -> Path:
    """One string value that declares 2^40 bytes."""
    with path.open("wb") as fh:
        fh.write(_kv_header(1) + _string_kv(b"general.name", 1 << 40))
        fh.truncate(512 * MiB)
    return path


def giant_array(path: Path) -> Path:
    """One uint64 array that declares 2^50 items."""
    with path.open("wb") as fh:
        fh.write(_kv_header(1) + struct.pack("<Q", 1) + b"x" + struct.pack("<IIQ", 9, 10, 1 << 50))
        fh.truncate(512 * MiB)
    return path


def many_keys(path: Path) -> Path:
    """A header that declares 2^60 key/value pairs."""
    with path.open("wb") as fh:
        fh.write(_kv_header(1 << 60))
        fh.truncate(512 * MiB)
    return path


CAP = f"header larger than {MAX_HEADER_BYTES // MiB} MiB"
HEADERS: dict[str, tuple[Callable[[Path], Path], int, str]] = {
    # (file, the most bytes a plan may fetch, what the error says)
    "endless": (endless_header, MAX_HEADER_BYTES, CAP),
    "giant string": (giant_string, 4 * MiB, CAP),
    "giant array": (giant_array, 4 * MiB, CAP),
    "2^60 keys": (many_keys, 4 * MiB, "key/values"),
}


@pytest.mark.parametrize("kind", list(HEADERS), ids=list(HEADERS))
def test_hostile_header_stops_at_the_cap(hub: LoopbackHub, tmp_path: Path, kind: str) -> None:
    make, most, says = HEADERS[kind]
    hub.add_repo(REPO, {NAME: make(tmp_path / "src.gguf")})
    before = tree(tmp_path)
    run = cli(tmp_path, "plan", f"hf://{REPO}", *PROFILE)
    refused(run, REPO, NAME, says)
    contained(tmp_path, before, run)
    assert hub.served(REPO, NAME) <= most


def test_header_past_the_end_of_a_small_file(hub: LoopbackHub, tmp_path: Path) -> None:
    path = tmp_path / "src.gguf"
    path.write_bytes(_kv_header(1) + _string_kv(b"general.name", 5 * MiB) + b"x" * 1000)
    hub.add_repo(REPO, {NAME: path})
    before = tree(tmp_path)
    run = cli(tmp_path, "plan", f"hf://{REPO}", *PROFILE)
    refused(run, REPO, NAME, "end of the file")
    contained(tmp_path, before, run)
    assert hub.served(REPO, NAME) <= path.stat().st_size
