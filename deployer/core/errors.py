"""Typed errors: every failure a user can cause or meet has a type with fields.

The CLI (deployer/cli/errors.py) maps each type to one line and an exit code.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class DeployerError(Exception):
    """Root of every error deployer raises on purpose."""

    exit_code: int = 1

    def message(self) -> str:
        """One line: what is wrong and the next command to try."""
        return str(self)


@dataclass
class NotFoundError(DeployerError):
    """A named thing (profile, model, quant) does not exist."""

    kind: str
    name: str
    close_matches: list[str] = field(default_factory=list)
    hint: str = ""

    def message(self) -> str:
        text = f"unknown {self.kind} '{self.name}'"
        if self.close_matches:
            text += "; did you mean " + ", ".join(f"'{m}'" for m in self.close_matches) + "?"
        elif self.hint:
            text += "."
        if self.hint:
            text += f" {self.hint}"
        return text


class ProfileNotFound(NotFoundError):
    """No hardware profile with that id."""

    def __init__(self, name: str, close_matches: list[str]) -> None:
        super().__init__("profile", name, close_matches, "Run 'deployer profiles list'.")


class ModelNotFound(NotFoundError):
    """No catalog model, local file or hf:// reference by that name."""

    def __init__(self, name: str, close_matches: list[str]) -> None:
        super().__init__(
            "model",
            name,
            close_matches,
            "Run 'deployer models list', or pass a .gguf path or hf://ORG/REPO:QUANT.",
        )


class QuantNotFound(NotFoundError):
    """The model has no file in that quantization."""

    def __init__(self, name: str, close_matches: list[str], model: str) -> None:
        super().__init__(
            "quant", name, close_matches, f"Run 'deployer models show {model}' for its quants."
        )


@dataclass
class InvalidDataFile(DeployerError):
    """A profile or catalog YAML file failed validation."""

    path: str
    line: int | None
    problem: str

    def message(self) -> str:
        # One line whatever the file's name or the parser quoted from it.
        from deployer.core.untrusted import printable  # untrusted imports this module

        where = f"{self.path}:{self.line}" if self.line else self.path
        return printable(f"{where}: {self.problem}")


@dataclass
class InvalidRequest(DeployerError):
    """A request that can never be satisfied as asked (e.g. context above the trained one)."""

    problem: str
    hint: str = ""
    exit_code: int = 2

    def message(self) -> str:
        return f"{self.problem}. {self.hint}".strip() if self.hint else self.problem


@dataclass
class GGUFReadError(DeployerError):
    """A GGUF file or header could not be read or is not a GGUF."""

    source: str
    problem: str

    def message(self) -> str:
        return f"cannot read GGUF '{self.source}': {self.problem}"


@dataclass
class ExternalUnavailable(DeployerError):
    """An external system (Hub, Docker, a tool) could not be reached."""

    system: str
    problem: str
    hint: str = ""
    exit_code: int = 3

    def message(self) -> str:
        text = f"{self.system} unavailable: {self.problem}"
        return f"{text}. {self.hint}" if self.hint else text
