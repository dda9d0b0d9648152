"""The one key-file reader (deployer/adapters/key_files.py): what every caller can rely on."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployer.adapters.bench_files import read_api_key
from deployer.adapters.eval_runs import api_key_from
from deployer.adapters.key_files import (
    MAX_KEY_FILE_BYTES,
    KeyFileProblem,
    is_one_key,
    read_key_file,
)
from deployer.adapters.router_status import _key as router_key
from deployer.adapters.secrets import FileSecretStore
from deployer.core.errors import EvalKeyMissing, InvalidRequest


def test_a_key_and_its_newline_are_read(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("sk-abc_123\n")
    assert read_key_file(path) == "sk-abc_123"


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=64))
def test_any_bytes_give_one_visible_key_or_a_problem_that_never_quotes_them(
    tmp_path: Path, raw: bytes
) -> None:
    path = tmp_path / "k"
    path.write_bytes(raw)
    try:
        key = read_key_file(path)
    except KeyFileProblem as exc:
        assert str(path) in str(exc)
        words = raw.strip()
        if len(words) >= 4 and words.isalnum():
            assert words.decode() not in exc.problem  # never quoted
        return
    assert is_one_key(key) and key.encode() in raw and "\n" not in key


def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "k"
    os.mkfifo(fifo)
    done: list[str] = []

    def read() -> None:
        try:
            read_key_file(fifo)
        except KeyFileProblem as exc:
            done.append(exc.problem)

    t = threading.Thread(target=read, daemon=True)
    start = time.monotonic()
    t.start()
    t.join(timeout=5)
    assert done == ["is not a regular file"] and time.monotonic() - start < 5


def test_a_folder_a_missing_file_and_an_oversized_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(KeyFileProblem, match="not a regular file"):
        read_key_file(tmp_path)
    with pytest.raises(KeyFileProblem) as missing:
        read_key_file(tmp_path / "nope")
    assert missing.value.missing
    big = tmp_path / "big"
    big.write_text("k" * (MAX_KEY_FILE_BYTES + 2))
    with pytest.raises(KeyFileProblem, match="larger than"):
        read_key_file(big)
    longest = tmp_path / "longest"
    longest.write_text("k" * MAX_KEY_FILE_BYTES + "\n")
    assert read_key_file(longest) == "k" * MAX_KEY_FILE_BYTES


def test_every_caller_applies_the_same_rules_in_its_own_words(tmp_path: Path) -> None:
    two_lines = tmp_path / "k"
    two_lines.write_text("sk-secret\nsk-other\n")
    with pytest.raises(InvalidRequest) as bench:
        read_api_key(two_lines)
    with pytest.raises(InvalidRequest) as store:
        FileSecretStore().read_api_key(two_lines)
    with pytest.raises(InvalidRequest) as ev:
        api_key_from("t", env=None, file=str(two_lines))
    for exc, words in ((bench, "--api-key-file"), (store, "API key file"), (ev, "target t")):
        message = exc.value.message()
        assert words in message and "does not hold one key" in message
        assert "secret" not in message and "\n" not in message
    assert router_key(str(two_lines)) is None  # a status query goes without a key
    with pytest.raises(EvalKeyMissing):
        api_key_from("t", env=None, file=str(tmp_path / "gone"))


def test_a_path_with_a_nul_byte_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    """A targets file's key-file: "a\\0b" reaches the reader as a path os.open refuses."""
    with pytest.raises(KeyFileProblem, match="NUL byte"):
        read_key_file(tmp_path / "k\0ey")
    with pytest.raises(InvalidRequest) as ev:
        api_key_from("t", env=None, file=str(tmp_path / "k\0ey"))
    assert "target t" in ev.value.message() and "NUL byte" in ev.value.message()
    with pytest.raises(InvalidRequest, match="NUL byte"):
        read_api_key(tmp_path / "k\0ey")
    assert router_key(str(tmp_path / "k\0ey")) is None


def test_eval_says_what_to_do_about_a_file_it_could_not_read(tmp_path: Path) -> None:
    """A key file that cannot be opened (a link loop, a folder, a NUL in its path) is not a
    problem of the key's format: the hint points at the file, not at what a key looks like."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    folder = tmp_path / "d"
    folder.mkdir()
    for path in (str(loop), str(folder), str(tmp_path / "k\0ey")):
        with pytest.raises(InvalidRequest) as exc:
            api_key_from("t", env=None, file=path)
        message = exc.value.message()
        assert "readable file" in message and "ASCII" not in message, message
    bad = tmp_path / "bad"
    bad.write_text("two words\n")
    with pytest.raises(InvalidRequest, match="ASCII"):
        api_key_from("t", env=None, file=str(bad))


def test_a_deployments_unreadable_key_file_points_at_a_redeploy(tmp_path: Path) -> None:
    """The store's keys are written by deploy alone: removing one generates nothing, so the
    next step given is a new deploy, whatever is wrong with the file."""
    two_lines = tmp_path / "k"
    two_lines.write_text("sk-secret\nsk-other\n")
    for path in (tmp_path / "gone", two_lines):
        with pytest.raises(InvalidRequest) as exc:
            FileSecretStore().read_api_key(path)
        message = exc.value.message()
        assert str(path) in message and "deployer down" in message
        assert "remove the file" not in message and "secret" not in message
