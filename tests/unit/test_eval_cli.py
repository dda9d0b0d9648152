"""`deployer eval` refusals: one line, the right exit code, nothing asked, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployer.cli.app import app

ITEM = {"id": "a", "prompt": "q", "expect": [{"type": "contains", "value": "x"}]}


def _run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["eval", *args])
    return r.exit_code, r.stderr


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ITEM) + "\n")
    return path


@pytest.mark.parametrize(
    ("args", "code", "problem"),
    [
        ([], 2, "no target"),
        (["-t", "url=http://127.0.0.1:9,model=m,key=sk-1"], 2, "never given as a value"),
        (["-t", "no-such-deployment"], 1, "unknown deployment 'no-such-deployment'"),
        (["-t", "http://127.0.0.1:9", "--report", "r.pdf"], 2, "name a .md or .html file"),
        (["-t", "http://127.0.0.1:9", "--model", "demo"], 2, "--model and --quants go together"),
        (["-t", "a-1", "-t", "deployment=b-2,name=a-1"], 2, "two targets are called"),
    ],
)
def test_refusals(data: Path, args: list[str], code: int, problem: str) -> None:
    got, err = _run(str(data), *args)
    assert got == code and problem in err and err.count("\n") == 1 and "sk-1" not in err


def test_a_bad_data_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps(ITEM)
        + "\n"
        + '{"prompt": "q", "expect": [{"type": "regex", "pattern": "(x"}]}\n'
    )
    code, err = _run(str(path), "-t", "http://127.0.0.1:9")
    assert code == 1 and f"{path}:2: expect.0.regex.pattern: invalid pattern" in err


def test_judge_items_need_a_judge(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({**ITEM, "expect": [{"type": "judge", "rubric": "ok"}]}))
    code, err = _run(str(path), "-t", "http://127.0.0.1:9")
    assert code == 2 and "--judge TARGET" in err


def test_missing_and_binary_data_files(tmp_path: Path) -> None:
    code, err = _run(str(tmp_path / "none.jsonl"), "-t", "http://127.0.0.1:9")
    assert code == 1 and "no such data file" in err
    bad = tmp_path / "bin.jsonl"
    bad.write_bytes(b'{"prompt": "\xff"}')
    code, err = _run(str(bad), "-t", "http://127.0.0.1:9")
    assert code == 1 and "bin.jsonl:1: not UTF-8 text" in err


def test_resume_needs_a_run_folder(data: Path, tmp_path: Path) -> None:
    code, err = _run(str(data), "-t", "http://127.0.0.1:9", "--resume", str(tmp_path))
    assert code == 2 and "not a run folder" in err
