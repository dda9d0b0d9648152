"""Checks for values that come from outside: the Hub, a GGUF header, an inventory, a state or
profile file, the command line. Each returns the value when it has its exact expected form and
raises UntrustedValue (one line, naming the value's source and the next step) otherwise.

Validate where a value enters, once; everything downstream may then rely on its form. See
docs/security.md for which input is checked where.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from deployer.core.errors import DeployerError

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# C0 and C1 controls, DEL, and the Unicode line/paragraph separators: anything that can end a
# line or move the cursor in a file, a log or a terminal.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Jinja2 / Ansible template delimiters: data must never be evaluated as a template.
TEMPLATE_RE = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")
SHOWN_MAX = 80
# A deployment name: a record file, a container, network and volume name, a compose project, a
# folder under a fleet host's root and a DNS label in k8s, so the narrowest of those rules.
DEPLOYMENT_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$")
DEPLOYMENT_NAME_MAX = 52
DEPLOYMENT_NAME_HINT = "Use lowercase letters, digits and '-', at most 52 characters."
# A container image reference: registry/name:tag@digest characters, never a leading "-" (it
# would read as an option) and no spaces.
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./:@-]{0,254}$")


@dataclass
class UntrustedValue(DeployerError):
    """A value from outside that does not have the form it must have."""

    source: str  # where it came from: "Hub listing of org/repo", "inventory host node1", ...
    what: str  # what it is: "sha256", "file name", "deployment name", ...
    value: str
    problem: str
    hint: str = ""
    exit_code: int = 2

    def message(self) -> str:
        text = f"{self.source}: {self.what} {shown(self.value)} {self.problem}"
        return f"{text}. {self.hint}" if self.hint else text


def shown(value: object) -> str:
    """A value as it may be printed in one line: repr-escaped controls, cut to SHOWN_MAX."""
    text = repr(str(value))
    return text if len(text) <= SHOWN_MAX else text[: SHOWN_MAX - 4] + "...'"


def printable(value: object) -> str:
    """`value` as text that cannot move the cursor or end a line: every non-printable character
    (controls, ANSI escapes, line separators, bidi and other format characters) is written the
    way repr() writes it (ESC as \\x1b, a newline as \\n); printable text is unchanged."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def check_sha256(value: object, source: str, what: str = "sha256") -> str:
    """64 lowercase hex digits, or UntrustedValue."""
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise UntrustedValue(source, what, str(value), "is not 64 lowercase hex digits")
    return value


def check_commit(value: object, source: str, what: str = "commit") -> str:
    """A 40-hex git commit id, or UntrustedValue."""
    if not isinstance(value, str) or not COMMIT_RE.fullmatch(value):
        raise UntrustedValue(source, what, str(value), "is not a 40-hex commit id")
    return value


def check_line(value: object, source: str, what: str, *, max_len: int = 4096) -> str:
    """A single line of text: no control characters (newline included), no template syntax,
    bounded length."""
    if not isinstance(value, str):
        raise UntrustedValue(source, what, str(value), "is not text")
    if CONTROL_RE.search(value):
        raise UntrustedValue(source, what, value, "contains a control character or line break")
    if any(unicodedata.category(c) == "Cf" for c in value):
        # Bidi overrides (U+202E) and zero-width characters make a name read as another one
        # in every file and terminal it reaches.
        raise UntrustedValue(
            source, what, value, "contains an invisible formatting character (bidi or zero-width)"
        )
    if TEMPLATE_RE.search(value):
        raise UntrustedValue(source, what, value, "contains template syntax ('{{', '{%' or '{#')")
    if len(value) > max_len:
        raise UntrustedValue(source, what, value, f"is longer than {max_len} characters")
    return value


def check_port(value: object, source: str, what: str = "port") -> int:
    """A TCP port, 1-65535 (an int, never a bool or text), or UntrustedValue."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UntrustedValue(source, what, str(value), "is not a whole number")
    if not 1 <= value <= 65535:
        raise UntrustedValue(
            source, what, str(value), "is out of range", "Use a port from 1 to 65535."
        )
    return value


def check_image(value: str, source: str) -> str:
    """A runtime image reference (registry/name:tag@digest characters only), or one line."""
    check_line(value, source, "image", max_len=255)
    if not IMAGE_RE.fullmatch(value):
        raise UntrustedValue(
            source, "image", value, "is not an image reference",
            "Use e.g. ghcr.io/ggml-org/llama.cpp:server.",
        )  # fmt: skip
    return value
