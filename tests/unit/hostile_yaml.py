"""Hypothesis strategies for hostile YAML data files: real profiles and catalog entries with
values, keys or whole documents replaced by what an attacker (or a typo) would put there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]

# 9**10 (3.4 billion) values once expanded, about 300 bytes as text.
BILLION_LAUGHS = (
    "[&l0 [lol,lol,lol,lol,lol,lol,lol,lol,lol], "
    + ", ".join(f"&l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 11))
    + "]"
)
DEEP = "[" * 100_000 + "]" * 100_000

# YAML text for one value, in flow style so it fits wherever a value goes.
SNIPPETS = [
    ".inf", "-.inf", ".nan", "1e308", "1.0e+308", "-1.0e+308", "1.0e+400", "-0.0", "0", "-1",
    "1" * 5000, "18446744073709551617", "0x7fffffffffffffff", "2025-13-45", "2025-05-01",
    "~", "true", "yes", "''", "{}", "[]", "[[[[[[[[[[]]]]]]]]]]", "[" * 40 + "]" * 40,
    "!!python/object/apply:os.system ['echo pwned']", "!!python/name:os.system",
    "!!python/object/new:tuple [[1]]", "!!binary '%%%'", "!!int x", "!!float inf", "!!str",
    "!!set {a, b}", "&a [*a]", "*undefined", "[/x]", "'[/x]'", "'[red]x[/red]'",
    "'[bold]bold[/bold] [link=https://x.invalid]l[/link]'", '"\\e[2J\\e]0;owned\\a"',
    '"line\\nbreak"', '"\\r\\x00"', '"\\u2028"', '"\\u202eevil"', "'{{ 7 * 7 }}'",
    "'{% raw %}'", "'{# c #}'", "'../../etc/passwd'", "'/abs/path'", "'a b c'",
    "'" + "x" * 10_000 + "'", ":smile:", "'%s%n'", BILLION_LAUGHS, DEEP,
]  # fmt: skip

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

hostile_value = st.one_of(
    st.sampled_from(SNIPPETS),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(lambda f: yaml.safe_dump(f).split("\n")[0]),
    st.text(max_size=40).map(lambda s: json.dumps(s, ensure_ascii=False)),  # double-quoted
    st.text(max_size=20).map(lambda s: "'" + s.replace("'", "''") + "'"),  # raw characters
    _json_values.map(
        lambda v: json.dumps(v, allow_nan=False, ensure_ascii=False) if _finite(v) else "0"
    ),
)
hostile_key = st.one_of(
    st.sampled_from(["[/x]", "'[red]k[/red]'", '"a\\nb"', '"\\e[2J"', "<<", "? [a]", "1", "~"]),
    st.text(max_size=20).map(lambda s: json.dumps(s, ensure_ascii=False)),
)


def _finite(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def shipped_text(folder: str, name: str) -> str:
    """The text of a shipped data file (profiles/NAME.yaml, catalog/NAME.yaml)."""
    return (ROOT / folder / f"{name}.yaml").read_text(encoding="utf-8")


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else []
    )
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


# Values that are valid YAML and reach the code after the loader unless the models refuse them.
damaging_value = st.sampled_from(
    [s for s in SNIPPETS if not s.startswith(("!!python", "!!binary", "*", "&a"))]
) | st.sampled_from(["'[/x]'", "'x [red]r[/red]'", "'[bold]'", "'x\\'", "'[link]'"])


@st.composite
def mutated(
    draw: st.DrawFn,
    folder: str,
    names: list[str],
    *,
    values: st.SearchStrategy[str] = hostile_value,
    keep: tuple[str, ...] = (),
    hows: tuple[str, ...] = ("value", "value", "value", "key", "drop", "add"),
    most: int = 3,
    leaves: bool = False,
) -> tuple[str, str]:
    """(file stem, YAML text): a shipped file with one to `most` values, keys or entries
    replaced by hostile YAML (`values`), or dropped; top-level keys in `keep` stay; with
    `leaves`, only scalars are replaced."""
    stem = draw(st.sampled_from(names))
    data = yaml.safe_load(shipped_text(folder, stem))
    replacements: dict[str, str] = {}
    for n in range(draw(st.integers(min_value=1, max_value=most))):
        paths = [
            p
            for p in _paths(data)
            if p[0] not in keep
            and not (leaves and isinstance(_parent(data, p)[p[-1]], (dict, list)))
        ]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _parent(data, path), path[-1]
        how = draw(st.sampled_from(hows))
        marker = f"__HOSTILE{n}__"
        if how == "value" or (how == "key" and isinstance(parent, list)):
            parent[last] = marker
            replacements[marker] = draw(values)
        elif how == "key":
            parent[marker] = parent.pop(last)
            replacements[marker] = draw(hostile_key)
        elif how == "drop":
            del parent[last]
        elif isinstance(parent, dict):
            parent[marker] = 1
            replacements[marker] = draw(hostile_key)
        if not isinstance(data, dict) or not data:
            break
    text = yaml.safe_dump(data, sort_keys=False, width=10**6, allow_unicode=True)
    for marker, snippet in replacements.items():
        text = text.replace(marker, snippet)
    return stem, text


def random_document() -> st.SearchStrategy[str]:
    """Any text, any JSON-like document, or a hostile snippet as the whole document."""
    return st.one_of(
        st.text(max_size=200),
        _json_values.map(lambda v: yaml.safe_dump(v, width=10**6)),
        st.sampled_from(SNIPPETS),
        st.lists(st.tuples(hostile_key, hostile_value), max_size=6).map(
            lambda pairs: "".join(f"{k}: {v}\n" for k, v in pairs)
        ),
    )
