"""eval's files: API keys (from an environment variable or a key file, refused in one line that
never quotes them when they could not go in an HTTP header), the run folder and the report
(a path that cannot be written is one line, not a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.adapters.eval_runs import DiskRunFolder, api_key_from, write_text_atomic
from deployer.adapters.output_folder import CannotWrite
from deployer.core.errors import EvalKeyMissing, InvalidRequest
from deployer.core.eval.runbook import MAX_ANSWER_CHARS, ItemResult, load_results
from deployer.core.eval.scorers import ScoreResult


def test_a_key_from_the_environment_or_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EVAL_TEST_KEY", " sk-abc_123 \n")
    assert api_key_from("t", env="EVAL_TEST_KEY", file=None) == "sk-abc_123"
    key_file = tmp_path / "k"
    key_file.write_text("sk-from-file\n")
    assert api_key_from("t", env=None, file=str(key_file)) == "sk-from-file"
    assert api_key_from("t", env=None, file=None) is None


def test_a_missing_key_is_named_by_where_it_should_be(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("EVAL_TEST_KEY", raising=False)
    with pytest.raises(EvalKeyMissing, match="EVAL_TEST_KEY"):
        api_key_from("t", env="EVAL_TEST_KEY", file=None)
    with pytest.raises(EvalKeyMissing, match="key file"):
        api_key_from("t", env=None, file=str(tmp_path / "none"))


def test_a_fifo_or_a_folder_as_the_key_file_is_refused_at_once(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes it: a blocking open would hang the run here
    for path in (fifo, tmp_path):
        with pytest.raises((InvalidRequest, EvalKeyMissing)) as info:
            api_key_from("t", env=None, file=str(path))
        assert str(path) in info.value.message()


def test_a_relative_key_file_in_a_targets_file_is_beside_it(tmp_path: Path) -> None:
    from deployer.core.eval.setup import assemble

    folder = tmp_path / "conf"
    targets = folder / "targets.yaml"
    text = (
        "targets:\n"
        "  - {url: 'http://127.0.0.1:9/v1', model: m, name: a, key-file: keys/a}\n"
        "  - {url: 'http://127.0.0.1:9/v1', model: m, name: b, key-file: /etc/k}\n"
        "  - {url: 'http://127.0.0.1:9/v1', model: m, name: c, key-file: '~/k'}\n"
    )
    specs, _, _ = assemble(
        data=tmp_path / "d.jsonl", target=[], targets_file=targets, model=None, quants=None,
        judge=None, read_data=lambda _: ('{"prompt": "p", "expect": [{"type": "exact", "value": "x"}]}\n', "h"),
        read_targets=lambda _: text,
    )  # fmt: skip
    assert [s.key_file for s in specs] == [str(folder / "keys" / "a"), "/etc/k", "~/k"]


@pytest.mark.parametrize(
    "key", ["sk-s\u00e9cret", "sk-sec\nret", "sk-sec ret", "sk-sec\x00ret", "sk-\u202eterces"]
)
def test_a_key_that_cannot_go_in_a_header_is_refused_without_quoting_it(
    key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key_file = tmp_path / "k"
    key_file.write_text(key)
    ways: list[tuple[str | None, str | None]] = [(None, str(key_file))]
    if "\x00" not in key:  # an environment variable cannot hold a NUL
        monkeypatch.setenv("EVAL_TEST_KEY", key)
        ways.append(("EVAL_TEST_KEY", None))
    for env, file in ways:
        with pytest.raises(InvalidRequest) as info:
            api_key_from("t", env=env, file=file)
        message = info.value.message()
        assert "does not hold one key" in message and "sec" not in message and "\n" not in message


def test_a_run_folder_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    with pytest.raises(CannotWrite) as info:
        DiskRunFolder(a_file).write_manifest({"k": 1})
    assert str(a_file) in info.value.message() and "--run-dir" in info.value.message()
    assert a_file.read_text() == "not a folder"


def test_a_results_file_that_cannot_be_appended_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").mkdir()
    with pytest.raises(CannotWrite, match=r"results\.jsonl"):
        DiskRunFolder(tmp_path).append_result({"target": "t"})


def test_a_report_path_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "r.md"
    folder.mkdir()
    with pytest.raises(CannotWrite, match="--report"):
        write_text_atomic(folder, "# report")
    assert folder.is_dir() and not list(tmp_path.glob(".r.md.*"))


@pytest.mark.parametrize("char", ["a", "\u00e9", "\U0001f600", "\n"])
def test_the_longest_answer_kept_is_read_back_as_answered(tmp_path: Path, char: str) -> None:
    # The results file is ASCII JSON: one emoji is 12 characters there. A line too long to read
    # back would have its item asked again on resume.
    folder = DiskRunFolder(tmp_path)
    detail = "\x00" * 120
    result = ItemResult("t", "q1", True, answer=char * (MAX_ANSWER_CHARS + 5),
                        scores=(ScoreResult("json_schema", False, detail),) * 16)  # fmt: skip
    folder.append_result(result.as_json())
    loaded = load_results(folder.read_result_lines())
    assert loaded.skipped == 0 and loaded.answered("t", "q1")
    assert loaded.latest[("t", "q1")].answer == char * MAX_ANSWER_CHARS


def test_a_line_cut_by_a_kill_is_skipped_and_the_next_starts_fresh(tmp_path: Path) -> None:
    folder = DiskRunFolder(tmp_path)
    folder.append_result(ItemResult("t", "q1", True, answer="x").as_json())
    with (tmp_path / "results.jsonl").open("ab") as fh:
        fh.write(b'{"target": "t", "item": "q2", "ok": tr')  # the kill
    folder.append_result(ItemResult("t", "q3", True, answer="z").as_json())
    loaded = load_results(folder.read_result_lines())
    assert loaded.skipped == 1
    assert [loaded.answered("t", q) for q in ("q1", "q2", "q3")] == [True, False, True]


def test_a_run_where_no_target_answers_exits_1_after_its_table(tmp_path: Path) -> None:
    # A port nobody listens on: every request a connection error, the run still completes.
    import socket

    from typer.testing import CliRunner

    from deployer.cli.app import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"id": "a", "prompt": "1, 2,", "expect": [{"type": "contains", "value": "3"}]}\n'
    )
    args = ["eval", str(data), "-t", f"url=http://127.0.0.1:{port},model=x,name=dead",
            "--attempts", "1", "--run-dir", str(tmp_path / "run")]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "dead" in r.stdout  # the table is printed first
    assert "no target answered any item" in r.stderr
    assert "Traceback" not in r.output
