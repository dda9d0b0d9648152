"""The files of `deployer eval`: the data file and a targets file (read bounded), API keys
from the environment or a key file, and the run folder (manifest.json written atomically,
results.jsonl appended one fsync'd line at a time), plus running work on a few threads."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from deployer.adapters.data_files import state_dir
from deployer.adapters.key_files import KeyFileProblem, is_one_key, key_file_message, read_key_file
from deployer.adapters.output_folder import CannotWrite
from deployer.adapters.statefile import write_state_json
from deployer.adapters.statefile import write_text_atomic as replace_atomically
from deployer.core.errors import EvalKeyMissing, InvalidDataFile, InvalidRequest
from deployer.core.eval.items import MAX_FILE_BYTES
from deployer.core.eval.runbook import MAX_RESULT_LINE_CHARS

T = TypeVar("T")
MANIFEST = "manifest.json"
RESULTS = "results.jsonl"
MAX_TARGETS_FILE_BYTES = 1 << 20
MAX_RESULTS_BYTES = 1 << 30


def read_bounded(path: Path, max_bytes: int, what: str) -> tuple[str, str]:
    """(text, sha256) of a regular file of at most `max_bytes`; one-line errors otherwise."""
    where = str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InvalidDataFile(where, None, f"no such {what}") from None
    except OSError as exc:
        raise InvalidDataFile(where, None, f"cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidDataFile(where, None, "not a regular file")
    with open(path, "rb") as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise InvalidDataFile(where, None, f"larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidDataFile(where, line, "not UTF-8 text") from None
    return text, hashlib.sha256(raw).hexdigest()


def read_data_file(path: Path) -> tuple[str, str]:
    """The eval data file's text and sha256."""
    return read_bounded(path, MAX_FILE_BYTES, "data file")


def read_targets_file(path: Path) -> str:
    """A targets YAML file's text."""
    return read_bounded(path, MAX_TARGETS_FILE_BYTES, "targets file")[0]


def api_key_from(label: str, *, env: str | None, file: str | None) -> str | None:
    """The key a target names: from environment variable `env` or key file `file`; None when
    it names neither."""
    if env is not None:
        value = os.environ.get(env, "").strip()
        if not value:
            raise EvalKeyMissing(label, f"environment variable {env}")
        if not is_one_key(value):
            raise InvalidRequest(
                f"target {label}: environment variable {env} does not hold one key",
                "A key is printable ASCII with no spaces.",
            )
        return value
    if file is None:
        return None
    path = Path(file).expanduser()
    try:
        return read_key_file(path)
    except KeyFileProblem as exc:
        if exc.missing:
            raise EvalKeyMissing(label, f"key file {path}") from None
        if exc.content:
            hint = "A key is printable ASCII with no spaces."
        else:  # not a regular file, not readable (permissions), not a usable path
            hint = "Point key-file= at a readable file that holds the key."
        raise InvalidRequest(f"target {label}: {key_file_message('key file', exc)}", hint) from None


def default_run_dir(key: str) -> Path:
    """Where a run lives unless --run-dir says: under the state dir, named by the run's hash
    (so the same data and targets find their run again)."""
    return state_dir() / "eval" / key[:16]


_RUN_DIR_HINT = "Give another --run-dir (a folder deployer may create and write)."


@contextmanager
def _writing(path: Path, hint: str) -> Iterator[None]:
    """An OSError while writing `path` (a file where a folder should be, no permission, a full
    disk) as one line naming it, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise CannotWrite(str(path), exc.strerror or type(exc).__name__, hint) from None


class DiskRunFolder:
    """A run folder on disk (deployer.core.eval.runbook.RunFolder)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        with _writing(self.path, _RUN_DIR_HINT):
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.is_dir():  # mkdir(exist_ok) passes a link to a file
                raise NotADirectoryError(20, "not a folder")

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, None when there is none yet."""
        path = self.path / MANIFEST
        if not path.exists():
            return None
        text, _ = read_bounded(path, 1 << 20, "manifest")
        try:
            data = json.loads(text)
        except ValueError:
            raise InvalidDataFile(
                str(path), None, "not JSON: not a run folder deployer wrote"
            ) from None
        if not isinstance(data, dict):
            raise InvalidDataFile(str(path), None, "not a run folder deployer wrote")
        return data

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write manifest.json atomically."""
        self._ensure()
        with _writing(self.path / MANIFEST, _RUN_DIR_HINT):
            write_state_json(self.path / MANIFEST, manifest)

    def read_result_lines(self) -> list[str]:
        """Every line of results.jsonl (a line that is not UTF-8 becomes one that fails to parse)."""
        path = self.path / RESULTS
        if not path.exists():
            return []
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise InvalidDataFile(str(path), None, "not a regular file")
        lines = []
        with open(path, "rb") as fh:
            total = 0
            while raw := fh.readline(MAX_RESULT_LINE_CHARS + 2):
                total += len(raw)
                if total > MAX_RESULTS_BYTES:
                    raise InvalidDataFile(str(path), None, f"larger than {MAX_RESULTS_BYTES} bytes")
                lines.append(raw.decode("utf-8", "replace"))
        return lines

    def append_result(self, line: dict[str, Any]) -> None:
        """Append one line and fsync it before returning: once counted, it survives a kill."""
        data = (json.dumps(line, ensure_ascii=True) + "\n").encode()
        with self._lock:
            self._ensure()
            with _writing(self.path / RESULTS, _RUN_DIR_HINT):
                fd = os.open(self.path / RESULTS, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    if os.fstat(fd).st_size and not _ends_with_newline(fd):
                        data = b"\n" + data  # a kill cut the last line: start on a fresh one
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)


def _ends_with_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return os.pread(fd, 1, size - 1) == b"\n"


def run_parallel(work: Callable[[T], None], items: Sequence[T], limit: int) -> None:
    """`work` over `items` on at most `limit` threads; the first exception is re-raised after
    the rest are cancelled."""
    with ThreadPoolExecutor(max_workers=max(1, limit), thread_name_prefix="eval") as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            _done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                for other in futures:
                    other.cancel()
                raise f.exception()  # type: ignore[misc]


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder and a rename."""
    with _writing(path, "Choose another --report."):
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, text)
