"""The eval use case: for each target in turn, open it (a deployment's endpoint, an API, or a
model deployed for the run), ask it every item not yet answered, score each answer, append it
to the run folder, close it; then summarise.

Everything that talks to the world arrives in EvalEdges (deployer.cli.wiring.eval_edges):
opening a target, the run folder, and running work concurrently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from deployer.core.errors import DeployerError
from deployer.core.eval.cost import pricing_for
from deployer.core.eval.items import EvalData, EvalItem
from deployer.core.eval.runbook import (
    ItemResult,
    LoadedResults,
    RunFolder,
    Settings,
    build_manifest,
    check_same_run,
    load_results,
)
from deployer.core.eval.scorers import Judge, ScoreResult, judge_prompt, judge_verdict, score_answer
from deployer.core.eval.summary import TargetSummary, summarize, winners
from deployer.core.eval.targets import TargetSpec
from deployer.core.untrusted import printable

T = TypeVar("T")


@dataclass(frozen=True)
class ChatRequest:
    """One request: a plain prompt (/v1/completions) or chat messages (/v1/chat/completions)."""

    prompt: str | None
    messages: tuple[tuple[str, str], ...] | None  # (role, content)
    max_tokens: int
    temperature: float
    seed: int


@dataclass(frozen=True)
class Answer:
    """What a server answered, with what it cost to get."""

    text: str
    tokens_in: int | None
    tokens_out: int | None
    latency_s: float  # the successful attempt's
    attempts: int
    started: float  # wall clock, epoch seconds
    ended: float


@dataclass(frozen=True)
class AskFailure:
    """No answer after every attempt: a short kind ("http 503", "timeout") and the detail."""

    kind: str
    detail: str
    attempts: int
    started: float
    ended: float


class Asker(Protocol):
    """Sends requests to one target (deployer.adapters.chat_client.ChatClient)."""

    def ask(self, request: ChatRequest) -> Answer | AskFailure:
        """One request with its retries; never raises for what the server or network does."""
        ...


@dataclass
class OpenTarget:
    """A target ready to be asked, and how to let it go (a deploy-for-the-run is removed)."""

    asker: Asker
    close: Callable[[], None] = lambda: None
    notes: list[str] = field(default_factory=list)


class Parallel(Protocol):
    """Runs `work` over `items`, at most `limit` at once; returns when all are done."""

    def __call__(self, work: Callable[[T], None], items: Sequence[T], limit: int) -> None: ...


class EvalProgress(Protocol):
    """What a progress display hears."""

    def target_started(self, label: str, total: int, done: int) -> None: ...

    def item_done(self, label: str, result: ItemResult) -> None: ...

    def note(self, text: str) -> None: ...


@dataclass(frozen=True)
class EvalEdges:
    """The systems eval talks to (deployer.cli.wiring.eval_edges builds the real ones)."""

    open_target: Callable[[TargetSpec], OpenTarget]  # raises DeployerError
    folder: RunFolder
    folder_name: str
    parallel: Parallel


@dataclass(frozen=True)
class EvalRequest:
    """What `deployer eval` was asked for."""

    data: EvalData
    targets: list[TargetSpec]
    settings: Settings = field(default_factory=Settings)
    judge: TargetSpec | None = None
    concurrency: int = 2
    profile_hourly: float | None = None  # a self-hosted target's USD/hour when it has none


@dataclass(frozen=True)
class EvalOutcome:
    """A finished (or continued) run."""

    manifest: dict[str, Any]
    summaries: list[TargetSummary]
    winners: dict[str, list[str]]
    results: dict[tuple[str, str], ItemResult]
    reused: int  # answers taken from the run folder instead of asked again
    skipped_lines: int  # result lines that could not be read
    notes: list[str]


def request_for(item: EvalItem, settings: Settings) -> ChatRequest:
    """The request that asks `item`."""
    messages = None
    if item.messages is not None:
        messages = tuple((m.role, m.content) for m in item.messages)
    return ChatRequest(
        prompt=item.prompt, messages=messages, max_tokens=item.max_tokens or settings.max_tokens,
        temperature=settings.temperature, seed=settings.seed,
    )  # fmt: skip


def _failed(target: str, item: str, failure: AskFailure) -> ItemResult:
    return ItemResult(
        target=target, item=item, ok=False, error_kind=failure.kind,
        error=printable(failure.detail), attempts=failure.attempts,
        started=failure.started, ended=failure.ended,
    )  # fmt: skip


def score_item(
    item: EvalItem, target: str, answer: Answer, judge: Asker | None, settings: Settings
) -> ItemResult:
    """Score `answer` with every scorer `item` lists; a judge asks the judge model."""
    scores: list[ScoreResult] = []
    for scorer in item.expect:
        if not isinstance(scorer, Judge):
            scores.append(score_answer(scorer, answer.text))
            continue
        if judge is None:  # the CLI refuses judge items without --judge; a safety net
            scores.append(ScoreResult("judge", False, "no judge model"))
            continue
        turns = judge_prompt(item.question, answer.text, scorer.rubric)
        asked = judge.ask(ChatRequest(
            prompt=None, messages=tuple((t["role"], t["content"]) for t in turns),
            max_tokens=8, temperature=0.0, seed=settings.seed,
        ))  # fmt: skip
        if isinstance(asked, AskFailure):
            failure = AskFailure(f"judge {asked.kind}", asked.detail, answer.attempts,
                                 answer.started, answer.ended)  # fmt: skip
            return _failed(target, item.id, failure)
        scores.append(judge_verdict(asked.text))
    return ItemResult(
        target=target, item=item.id, ok=True, answer=answer.text, scores=tuple(scores),
        latency_s=answer.latency_s, tokens_in=answer.tokens_in, tokens_out=answer.tokens_out,
        attempts=answer.attempts, started=answer.started, ended=answer.ended,
    )  # fmt: skip


def run_eval(req: EvalRequest, edges: EvalEdges, progress: EvalProgress) -> EvalOutcome:
    """Ask every target every item not yet answered in the run folder; summarise them all."""
    manifest = build_manifest(req.data, req.targets, req.settings, req.judge)
    # Before any request: a price table that cannot be read stops the run now, not after it.
    pricing = {t.label: pricing_for(t, req.profile_hourly) for t in req.targets}
    existing = edges.folder.read_manifest()
    if existing is not None:
        check_same_run(existing, manifest, edges.folder_name)
    else:
        edges.folder.write_manifest(manifest)
    loaded = load_results(edges.folder.read_result_lines())
    reused = sum(1 for t in req.targets for i in req.data.items if loaded.answered(t.label, i.id))
    notes: list[str] = []
    if loaded.skipped:
        notes.append(f"{loaded.skipped} unreadable line(s) in the results file were skipped")
    judge = _open_judge(req, edges, loaded, notes)
    try:
        for target in req.targets:
            _run_target(req, edges, progress, loaded, target, judge.asker if judge else None, notes)
    finally:
        if judge is not None:
            judge.close()
    summaries = [summarize(t, req.data, loaded.latest, pricing[t.label]) for t in req.targets]
    return EvalOutcome(
        manifest=manifest, summaries=summaries, winners=winners(summaries),
        results=loaded.latest, reused=reused, skipped_lines=loaded.skipped, notes=notes,
    )  # fmt: skip


def _pending(req: EvalRequest, loaded: LoadedResults, label: str) -> list[EvalItem]:
    return [i for i in req.data.items if not loaded.answered(label, i.id)]


def _open_judge(
    req: EvalRequest, edges: EvalEdges, loaded: LoadedResults, notes: list[str]
) -> OpenTarget | None:
    """The judge, opened once, only when an item still to be asked needs it."""
    if req.judge is None:
        return None
    needed = any(i.has_judge for t in req.targets for i in _pending(req, loaded, t.label))
    if not needed:
        return None
    opened = edges.open_target(req.judge)
    notes.extend(opened.notes)
    return opened


def _run_target(
    req: EvalRequest, edges: EvalEdges, progress: EvalProgress, loaded: LoadedResults,
    target: TargetSpec, judge: Asker | None, notes: list[str],
) -> None:  # fmt: skip
    todo = _pending(req, loaded, target.label)
    progress.target_started(target.label, len(req.data.items), len(req.data.items) - len(todo))
    if not todo:
        return
    try:
        opened = edges.open_target(target)
    except DeployerError as exc:
        # A target that cannot be reached is reported beside the others; the run goes on.
        progress.note(f"{target.label}: {exc.message()}")
        for item in todo:
            failure = AskFailure("target unavailable", exc.message(), 0, 0.0, 0.0)
            _record(edges, progress, loaded, _failed(target.label, item.id, failure))
        return
    notes.extend(opened.notes)
    try:

        def ask(item: EvalItem) -> None:
            asked = opened.asker.ask(request_for(item, req.settings))
            if isinstance(asked, AskFailure):
                result = _failed(target.label, item.id, asked)
            else:
                result = score_item(item, target.label, asked, judge, req.settings)
            _record(edges, progress, loaded, result)

        edges.parallel(ask, todo, req.concurrency)
    finally:
        opened.close()


def _record(
    edges: EvalEdges, progress: EvalProgress, loaded: LoadedResults, result: ItemResult
) -> None:
    edges.folder.append_result(result.as_json())  # durable before it counts as done
    loaded.latest[(result.target, result.item)] = result
    progress.item_done(result.target, result)
