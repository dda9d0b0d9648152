"""Output helpers: JSON for machines, aligned tables and rich output for people.

Data (names, paths, model ids, anything from a file, the Hub or a host) never goes into a rich
markup string: `[/x]` in it would raise MarkupError and `[red]` would vanish. Lines are built
from pieces with `line`/`styled` (rich Text, never parsed as markup), table cells with `cells`,
and every piece goes through `printable`, so a control character or an ANSI escape in data
is shown escaped instead of reaching the terminal.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from deployer.core.untrusted import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


class _LazyConsole:
    """A rich Console made on first use: commands that print no rich output never import rich."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._console: Console | None = None

    def get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._kwargs)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


console: Any = _LazyConsole()
err_console: Any = _LazyConsole(stderr=True)


def styled(value: object, style: str) -> Text:
    """`value` shown literally (controls escaped) in a rich style such as "bold" or "red"."""
    from rich.text import Text

    return Text(printable(value), style=style)


def line(*pieces: object) -> Text:
    """One line from pieces: Text pieces (from `styled`) keep their style, anything else is
    shown literally with its controls escaped. Nothing is parsed as markup."""
    from rich.text import Text

    out = Text()
    for piece in pieces:
        if isinstance(piece, Text):
            out.append_text(piece)
        else:
            out.append(printable(piece))
    return out


def cells(*values: object) -> list[Text]:
    """Table cells shown literally: `table.add_row(*cells(name, model, ...))`."""
    return [line(v) for v in values]


def echo(*pieces: object, err: bool = False, soft_wrap: bool = False) -> None:
    """Print one `line` of pieces on stdout (stderr with `err`)."""
    target = err_console if err else console
    target.print(line(*pieces), soft_wrap=soft_wrap)


def print_block(text: str, *, err: bool = False) -> None:
    """Print multi-line text (a rendered file) literally: its line breaks kept, every other
    control character escaped."""
    from rich.text import Text

    target = err_console if err else console
    body = "\n".join(printable(part) for part in text.split("\n"))
    target.print(Text(body), soft_wrap=True)


def print_json(data: Any) -> None:
    """Stable, indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _bold_header() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def print_rows(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> None:
    """A plain column-aligned table (the `docker ps` / `kubectl get` shape): greppable, no box
    drawing, and cheap enough for list commands that must start fast. Columns in `right` are
    right-aligned (numbers); the header is bold on a terminal."""
    shown = [[printable(c) for c in r] for r in rows]  # data: no raw controls on the terminal
    widths = [max([len(h)] + [len(r[i]) for r in shown]) for i, h in enumerate(headers)]

    def fmt(row: Sequence[str]) -> str:
        out = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        return "  ".join(out).rstrip()

    head = fmt(headers)
    if _bold_header():
        head = f"\033[1m{head}\033[0m"
    sys.stdout.write("\n".join([head, *(fmt(r) for r in shown)]) + "\n")
