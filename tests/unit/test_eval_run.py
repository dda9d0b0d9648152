"""The eval use case in memory: resume bookkeeping, failures beside answers, the judge, run
folders that belong to another run, and results files cut or edited by hand."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from deployer.core.errors import (
    DeployerError,
    EvalRunMismatch,
    ExternalUnavailable,
    InvalidDataFile,
)
from deployer.core.eval.flow import (
    Answer,
    AskFailure,
    ChatRequest,
    EvalEdges,
    EvalRequest,
    OpenTarget,
    run_eval,
)
from deployer.core.eval.items import EvalData, parse_items
from deployer.core.eval.runbook import ItemResult, Settings, load_results
from deployer.core.eval.targets import TargetSpec, parse_target

T = TypeVar("T")


def _data(n: int = 4, judge: bool = False) -> EvalData:
    lines = []
    for i in range(n):
        expect: list[dict[str, Any]] = [{"type": "contains", "value": f"a{i}"}]
        if judge:
            expect.append({"type": "judge", "rubric": "says a-something"})
        lines.append(json.dumps({"id": f"q{i}", "prompt": f"say a{i}", "expect": expect}))
    return parse_items("\n".join(lines), "d.jsonl", "ab" * 32)


@dataclass
class MemoryFolder:
    """A run folder in memory (the disk one is adapters/eval_runs.DiskRunFolder)."""

    manifest: dict[str, Any] | None = None
    lines: list[str] = field(default_factory=list)

    def read_manifest(self) -> dict[str, Any] | None:
        return self.manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest

    def read_result_lines(self) -> list[str]:
        return list(self.lines)

    def append_result(self, line: dict[str, Any]) -> None:
        self.lines.append(json.dumps(line))


@dataclass
class EchoServer:
    """Stands in for a model server: answers the prompt's last word, or fails as told."""

    fail: Callable[[ChatRequest], AskFailure | None] = lambda _r: None
    asked: list[ChatRequest] = field(default_factory=list)
    wrong: bool = False

    def ask(self, request: ChatRequest) -> Answer | AskFailure:
        self.asked.append(request)
        failure = self.fail(request)
        if failure is not None:
            return failure
        question = request.prompt if request.prompt is not None else request.messages[-1][1]  # type: ignore[index]
        word = question.split()[-1]
        text = "nothing" if self.wrong else f"I say {word}"
        return Answer(text, 5, 3, 0.1, 1, 100.0, 100.1)


class Quiet:
    def target_started(self, label: str, total: int, done: int) -> None: ...

    def item_done(self, label: str, result: ItemResult) -> None: ...

    def note(self, text: str) -> None: ...


def _serial(work: Callable[[T], None], items: Sequence[T], limit: int) -> None:
    for item in items:
        work(item)


def _edges(
    folder: MemoryFolder, servers: dict[str, EchoServer], broken: frozenset[str] = frozenset()
) -> EvalEdges:
    def open_target(t: TargetSpec) -> OpenTarget:
        if t.label in broken:
            raise ExternalUnavailable("deploy", "no room")
        return OpenTarget(servers[t.label])

    return EvalEdges(open_target=open_target, folder=folder, folder_name="run", parallel=_serial)


A = parse_target("url=http://127.0.0.1:1,model=a,name=a")
B = parse_target("url=http://127.0.0.1:2,model=b,name=b")


def test_scores_differ_and_failures_sit_beside_answers() -> None:
    folder = MemoryFolder()
    servers = {"a": EchoServer(), "b": EchoServer(wrong=True)}
    dead = parse_target("url=http://127.0.0.1:3,model=c,name=dead")
    servers["dead"] = EchoServer(fail=lambda r: AskFailure("connection", "refused", 4, 0, 0))
    out = run_eval(EvalRequest(_data(), [A, B, dead]), _edges(folder, servers), Quiet())
    by = {s.label: s for s in out.summaries}
    assert by["a"].score == 1.0 and by["b"].score == 0.0
    assert by["dead"].score is None and by["dead"].failures == {"connection": 4}
    assert out.winners["score"] == ["a"] and out.winners["failed"] == ["a", "b"]
    assert len(folder.lines) == 12


def test_a_resumed_run_asks_only_what_has_no_answer() -> None:
    folder = MemoryFolder()
    flaky = EchoServer(
        fail=lambda r: AskFailure("http 503", "busy", 4, 0, 0) if "a2" in (r.prompt or "") else None
    )
    run_eval(EvalRequest(_data(), [A]), _edges(folder, {"a": flaky}), Quiet())
    assert len(flaky.asked) == 4
    healthy = EchoServer()
    out = run_eval(EvalRequest(_data(), [A]), _edges(folder, {"a": healthy}), Quiet())
    assert [r.prompt for r in healthy.asked] == ["say a2"]  # only the failed one again
    assert out.reused == 3 and out.summaries[0].score == 1.0
    again = EchoServer()
    run_eval(EvalRequest(_data(), [A]), _edges(folder, {"a": again}), Quiet())
    assert again.asked == []


def test_a_cut_or_edited_results_file_is_read_as_far_as_it_holds() -> None:
    folder = MemoryFolder()
    run_eval(EvalRequest(_data(), [A]), _edges(folder, {"a": EchoServer()}), Quiet())
    folder.lines[1] = folder.lines[1][:30]  # a kill in the middle of a write
    folder.lines[2] = json.dumps({"target": "a", "item": "q2", "ok": "yes"})
    folder.lines.append("\x00\x1b[2J garbage")
    server = EchoServer()
    out = run_eval(EvalRequest(_data(), [A]), _edges(folder, {"a": server}), Quiet())
    assert sorted(r.prompt or "" for r in server.asked) == ["say a1", "say a2"]
    assert out.skipped_lines == 3 and out.notes


def test_a_failure_never_replaces_an_answer() -> None:
    ok = ItemResult("a", "q0", True, answer="x")
    bad = ItemResult("a", "q0", False, error_kind="timeout")
    loaded = load_results([json.dumps(ok.as_json()), json.dumps(bad.as_json())])
    assert loaded.answered("a", "q0")


@pytest.mark.parametrize(
    ("change", "what"),
    [("data", "the data file"), ("targets", "the targets"), ("settings", "the settings")],
)
def test_a_run_folder_of_another_run_is_refused(change: str, what: str) -> None:
    folder = MemoryFolder()
    run_eval(EvalRequest(_data(), [A]), _edges(folder, {"a": EchoServer()}), Quiet())
    req = EvalRequest(_data(), [A])
    if change == "data":
        req = EvalRequest(_data(n=3), [A])
        req = EvalRequest(EvalData("d.jsonl", "cd" * 32, req.data.items), [A])
    elif change == "targets":
        req = EvalRequest(_data(), [A, B])
    else:
        req = EvalRequest(_data(), [A], settings=Settings(seed=7))
    server = EchoServer()
    with pytest.raises(EvalRunMismatch) as info:
        run_eval(req, _edges(folder, {"a": server, "b": server}), Quiet())
    assert what in info.value.message() and server.asked == []


def test_a_target_that_cannot_be_opened_is_reported_and_the_run_goes_on() -> None:
    folder = MemoryFolder()
    out = run_eval(
        EvalRequest(_data(), [A, B]),
        _edges(folder, {"b": EchoServer()}, broken=frozenset({"a"})),
        Quiet(),
    )
    by = {s.label: s for s in out.summaries}
    assert by["a"].failures == {"target unavailable": 4} and by["b"].score == 1.0


def test_the_judge_grades_and_its_failure_fails_the_item_for_a_retry() -> None:
    judge_spec = parse_target("url=http://127.0.0.1:9,model=j,name=judge")

    class Judge(EchoServer):
        def ask(self, request: ChatRequest) -> Answer | AskFailure:
            self.asked.append(request)
            assert request.messages is not None and request.temperature == 0
            body = request.messages[-1][1]
            if "a3" in body:
                return AskFailure("timeout", "slow", 4, 0, 0)
            return Answer("PASS" if "I say a0" in body else "FAIL", 1, 1, 0.1, 1, 0, 0)

    folder = MemoryFolder()
    judge = Judge()
    servers: dict[str, EchoServer] = {"a": EchoServer(), "judge": judge}
    out = run_eval(
        EvalRequest(_data(judge=True), [A], judge=judge_spec), _edges(folder, servers), Quiet()
    )
    s = out.summaries[0]
    assert s.by_scorer["judge"] == (1, 3) and s.failures == {"judge timeout": 1}
    assert s.score == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)


def test_requests_carry_the_settings() -> None:
    server = EchoServer()
    settings = Settings(temperature=0.0, seed=42, max_tokens=17)
    run_eval(
        EvalRequest(_data(1), [A], settings=settings),
        _edges(MemoryFolder(), {"a": server}),
        Quiet(),
    )
    (req,) = server.asked
    assert (req.temperature, req.seed, req.max_tokens) == (0.0, 42, 17)


def test_an_unexpected_error_is_not_swallowed() -> None:
    class Boom(EchoServer):
        def ask(self, request: ChatRequest) -> Answer | AskFailure:
            raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        run_eval(EvalRequest(_data(1), [A]), _edges(MemoryFolder(), {"a": Boom()}), Quiet())
    assert issubclass(EvalRunMismatch, DeployerError)


def test_a_price_table_that_cannot_be_read_stops_the_run_before_any_request(
    tmp_path: Path,
) -> None:
    prices = tmp_path / "config" / "prices"  # the autouse fixture's config dir
    prices.mkdir(parents=True)
    (prices / "mine.yaml").write_text("id: mine\nprovider: [not, a, line]\n")
    server = EchoServer()
    with pytest.raises(InvalidDataFile, match=r"mine\.yaml"):
        run_eval(EvalRequest(_data(), [A]), _edges(MemoryFolder(), {"a": server}), Quiet())
    assert server.asked == []
