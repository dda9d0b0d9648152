"""What `deployer eval` prints: a progress bar while it runs, then the side-by-side table
(best value per column marked), the report file and the --json document."""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from deployer.cli.output import cells, echo, err_console, print_json
from deployer.core.eval.flow import EvalOutcome
from deployer.core.eval.report import (
    HEADERS,
    html_report,
    markdown_report,
    outcome_json,
    row_cells,
    winner_marks,
)
from deployer.core.eval.runbook import ItemResult
from deployer.core.untrusted import printable


class ProgressView:
    """A rich progress bar per target on stderr (deployer.core.eval.flow.EvalProgress)."""

    def __init__(self, *, enabled: bool) -> None:
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._enabled = enabled

    def __enter__(self) -> ProgressView:
        if self._enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"), console=err_console.get(),
                transient=False,
            )  # fmt: skip
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def target_started(self, label: str, total: int, done: int) -> None:
        """A bar for `label`, `done` of `total` already answered in the run folder."""
        if self._progress is not None:
            self._tasks[label] = self._progress.add_task(
                printable(label), total=total, completed=done, failed=0
            )

    def item_done(self, label: str, result: ItemResult) -> None:
        """One more item asked."""
        task = self._tasks.get(label)
        if self._progress is None or task is None:
            return
        failed = self._progress.tasks[task].fields.get("failed", 0) + (0 if result.ok else 1)
        self._progress.update(task, advance=1, failed=failed)

    def note(self, text: str) -> None:
        """A line about what is happening (a deploy, a target that cannot be reached)."""
        if self._progress is not None:
            self._progress.console.print(printable(text), markup=False, highlight=False)
        else:
            print(printable(text), file=sys.stderr)


def _table(outcome: EvalOutcome) -> None:
    from rich.table import Table

    from deployer.cli.output import console, styled

    table = Table(show_edge=False, pad_edge=False)
    for i, h in enumerate(HEADERS):
        table.add_column(h, justify="left" if i in (0, 2) else "right")
    for s in outcome.summaries:
        row: list[Any] = cells(*row_cells(s))
        for i in winner_marks(outcome, s):
            row[i] = styled(row_cells(s)[i] + " *", "bold green")
        table.add_row(*row)
    console.print(table)


def show(outcome: EvalOutcome, run_dir: str, report: Path | None, *, as_json: bool) -> None:
    """Print the outcome (table or JSON) and write the report file when asked."""
    if report is not None:
        text = (
            html_report(outcome)
            if report.suffix.lower() in (".html", ".htm")
            else markdown_report(outcome)
        )
        from deployer.cli.wiring import write_report

        write_report(report, text)
    if as_json:
        print_json(outcome_json(outcome, run_dir))
        return
    _table(outcome)
    echo("* best in its column. score: mean item score; 95% CI: Wilson (pass/fail items) or "
         "bootstrap; $/item: tokens x price (APIs) or USD/hour x busy time (self-hosted).")  # fmt: skip
    for note in outcome.notes:
        echo(note)
    if outcome.reused:
        echo(f"{outcome.reused} answer(s) reused from the run folder (not asked again)")
    echo("run folder: ", run_dir)
    if report is not None:
        echo("report: ", str(report))
