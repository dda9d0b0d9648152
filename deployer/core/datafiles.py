"""Load YAML data files into pydantic models, reporting errors as file:line: problem."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from deployer.core.errors import InvalidDataFile
from deployer.core.resources import yaml_files

M = TypeVar("M", bound=BaseModel)
# libyaml's loader when present (about 10x faster); the pure-Python one otherwise.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _node_line(node: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """1-based line of the deepest node along `loc` that exists in the YAML tree."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            key = next((k for k, v in node.value if k.value == part), None)
            if match is None or key is None:
                return line
            line = key.start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def parse_yaml_model(text: str, model: type[M], source: str) -> M:
    """Validate YAML `text` as `model`; errors name the file, the line and the field."""
    try:
        data: Any = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidDataFile(source, line, f"invalid YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise InvalidDataFile(source, 1, "expected a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Only now build the node tree: it is slow, and only errors need line numbers.
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        assert node is not None  # `data` was a mapping
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        raise InvalidDataFile(source, _node_line(node, loc), f"{field}: {msg}") from exc


def iter_yaml_files(folder: Traversable | Path) -> Iterator[tuple[str, str]]:
    """Yield (source name, text) for each *.yaml file in `folder`, sorted by name."""
    for entry in yaml_files(folder):
        source = str(entry) if isinstance(entry, Path) else entry.name
        yield source, entry.read_text(encoding="utf-8")
