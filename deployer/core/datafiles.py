"""Load YAML data files into pydantic models, reporting errors as ONE line: file:line: problem.

Profiles and catalog entries are files a user may be handed: everything here treats them as
hostile. The text is bounded in size, its shape (nesting depth, what aliases expand to) is
measured from the parser's event stream before anything is built, it is loaded with the safe
loader (no Python tags), and every field is typed and bounded by the models that use the field
types at the end of this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError

from deployer.core.errors import InvalidDataFile
from deployer.core.untrusted import CONTROL_RE, TEMPLATE_RE, shown

M = TypeVar("M", bound=BaseModel)
# libyaml's loader when present (about 10x faster); the pure-Python one otherwise.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# A profile is about 2 KB and nests 3 levels; these bounds are far above any real file and far
# below what hurts: libyaml's composer recurses in C (a few 10,000 levels crash the process),
# and an alias bomb ("billion laughs") is small as text but huge once expanded by validation.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000


# ---- parsing ----------------------------------------------------------------------------------


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    """(line, one-line problem) of a YAML error (its str() spans several lines)."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        code = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        return line, f"character {code}: {exc.reason}"
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return (mark.line + 1 if mark is not None else None), problem


def _check_shape(text: str, source: str) -> None:
    """Refuse a document nested deeper than MAX_DEPTH or expanding to more than MAX_NODES values
    (aliases counted as what they expand to), reading only the parser's events."""
    sizes: dict[str, int] = {}  # anchor -> number of values it expands to
    stack: list[list[Any]] = [[None, 0]]  # open collections: [anchor, values so far]
    total = 0
    for event in yaml.parse(text, Loader=_LOADER):
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.CollectionStartEvent):
            stack.append([event.anchor, 1])
            total += 1
            if len(stack) - 1 > MAX_DEPTH:
                raise InvalidDataFile(source, line, f"nested deeper than {MAX_DEPTH} levels")
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
            total += 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:  # undefined, or inside its own anchor (a cycle)
                name = shown(event.anchor)
                raise InvalidDataFile(source, line, f"alias {name} refers to no complete node")
            anchor, size = None, sizes[event.anchor]
            total += size
        else:
            continue
        if anchor is not None:
            sizes[anchor] = size
        stack[-1][1] += size
        if total > MAX_NODES:
            raise InvalidDataFile(
                source, line, f"expands to more than {MAX_NODES} values (an alias bomb?)"
            )


def _load(text: str, source: str) -> Any:
    """The document's data (safe loader only), or InvalidDataFile in one line."""
    if len(text) > MAX_FILE_BYTES:
        raise InvalidDataFile(source, None, f"larger than {MAX_FILE_BYTES} bytes")
    try:
        _check_shape(text, source)
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        line, problem = _yaml_problem(exc, text)
        raise InvalidDataFile(source, line, f"invalid YAML: {problem}") from exc
    except (ValueError, OverflowError) as exc:
        # A scalar the constructor cannot build: a date like 2025-13-45, an int of 5,000 digits.
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidDataFile(source, None, f"invalid YAML value: {first}") from exc


# ---- validation errors as one line -----------------------------------------------------------

_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _node_line(node: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """1-based line of the deepest node along `loc` that exists in the YAML tree."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                return line
            line = pair[0].start_mark.line + 1
            node = pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def field_path(loc: tuple[int | str, ...]) -> str:
    """`gpu.memory_mib`, `quants.Q4_K_M.bytes`; a key that came from the file and is not plain
    is quoted and escaped (it may hold markup, controls or a thousand characters)."""
    parts = [str(p) if _PLAIN_KEY_RE.match(str(p)) else shown(p) for p in loc]
    return ".".join(parts) or "(top level)"


def _problem(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    msg = str(error["msg"])
    # Our validators' messages read as sentences; pydantic prefixes them.
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _validation_error(exc: ValidationError, text: str | None, source: str) -> InvalidDataFile:
    """The first problem with its line (when there is a YAML text) and field, and how many
    more there are."""
    errors = exc.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    line = None
    if text is not None:
        # Only now build the node tree: it is slow, and only errors need line numbers. The
        # shape was checked, so the composer's recursion stays shallow.
        node = yaml.compose(text, Loader=_LOADER)
        line = _node_line(node, loc) if node is not None else 1
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return InvalidDataFile(source, line, f"{field_path(loc)}: {_problem(first)}{more}")


def validate_data(data: object, model: type[M], source: str) -> M:
    """Validate data that did not come from a file (e.g. detected hardware) as `model`;
    errors are one InvalidDataFile line naming `source` and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, None, source) from exc


def parse_yaml_model(text: str, model: type[M], source: str) -> M:
    """Validate YAML `text` as `model`; errors name the file, the line and the field."""
    data = _load(text, source)
    if not isinstance(data, dict):
        raise InvalidDataFile(source, 1, "expected a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, text, source) from exc


def parse_by_id(texts: Iterable[tuple[str, str]], model: type[M]) -> dict[str, M]:
    """Each (file name, YAML text) validated as `model` and keyed by its `id`, which must match
    the file's name (a later file with the same id overrides an earlier one)."""
    found: dict[str, M] = {}
    for name, text in texts:
        item = parse_yaml_model(text, model, name)
        item_id = str(item.model_dump(include={"id"})["id"])
        stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if item_id != stem:
            raise InvalidDataFile(name, 1, f"id '{item_id}' must match the file name '{stem}'")
        found[item_id] = item
    return found


# ---- field types shared by profiles and the catalog ------------------------------------------

ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


def _id(value: str) -> str:
    if not ID_RE.fullmatch(value):
        raise ValueError(
            f"{shown(value)} is not an id: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, at most 128 characters"
        )
    return value


def _line(value: str) -> str:
    if CONTROL_RE.search(value):
        raise ValueError("contains a control character or line break")
    if TEMPLATE_RE.search(value):
        raise ValueError("contains template syntax ('{{', '{%' or '{#')")
    return value


def _pattern(regex: str, what: str) -> AfterValidator:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise ValueError(f"{shown(value)} is not {what}")
        return value

    return AfterValidator(check)


# An id that becomes a file name, a deployment label or a path part: an exact safe form.
Id = Annotated[str, AfterValidator(_id)]
# A name or a short fact shown in one line (table cell, plan header): no controls, no templates.
Line = Annotated[str, AfterValidator(_line), AfterValidator(lambda v: _max_len(v, 256))]
# Prose (notes, sources): still one line of text, longer.
Prose = Annotated[str, AfterValidator(_line), AfterValidator(lambda v: _max_len(v, 4096))]
# A short token such as a CPU flag, a compute capability or a quant label.
Token = Annotated[str, _pattern(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$", "a short token")]
# A Hub repository id, ORG/NAME (the Hub's own character set).
RepoId = Annotated[
    str,
    _pattern(
        r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$",
        "a Hub repo id ORG/NAME",
    ),
]
# A file inside a Hub repo: relative, each segment starting with a letter or digit (so no '..',
# no hidden files, no absolute path), ending in .gguf.
RepoFile = Annotated[
    str,
    _pattern(
        r"^(?:[A-Za-z0-9][A-Za-z0-9._+-]{0,199}/){0,8}[A-Za-z0-9][A-Za-z0-9._+-]{0,199}\.gguf$",
        "a relative .gguf file name in the repo",
    ),
]
# A container image reference: registry/name[:tag][@digest].
ImageRef = Annotated[
    str, _pattern(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$", "a container image reference")
]
Url = Annotated[str, _pattern(r"^https?://[^\s\x00-\x1f\x7f{}<>\"'`\\]{1,2000}$", "an http(s) URL")]


def _max_len(value: str, limit: int) -> str:
    if len(value) > limit:
        raise ValueError(f"is longer than {limit} characters")
    return value
