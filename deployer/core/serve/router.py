"""Several models behind one llama-server in router mode: names, the models file, the preset INI.

The pinned llama-server runs as a router when it is given no model: each section of its
`--models-preset` INI file names a model (the name clients send as `model`) and holds the
arguments of the llama-server child that serves it; `--models-max N` caps how many children
run at once (the least recently used is unloaded first). Everything written into the INI is
checked against the grammar the server parses (common/preset.cpp), and read back before use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployer.core.datafiles import parse_yaml_model
from deployer.core.errors import InvalidRequest
from deployer.core.model.ref import model_alias
from deployer.core.serve.conventions import MODEL_DIR
from deployer.core.serve.limits import ResourceLimits, memory_limits
from deployer.core.serve.specs import Mount
from deployer.core.untrusted import UntrustedValue, check_line, shown

# A model name is a preset section, a file name under /models, a JSON value and a label part:
# one plain word keeps it the same in all of them.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MODEL_NAME_HINT = (
    "Use letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit)."
)
# The INI grammar: keys are identifiers; a value ends at a line break or at whitespace followed
# by ';' or '#'. Deployer writes values that need none of these, and refuses any that would.
INI_KEY_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]*$")
INI_VALUE_BAD = re.compile(r"[\x00-\x1f\x7f\[\]=;#]")
PRESET_FILE = "models.ini"
ROUTER_LABEL = "io.deployer.models"  # on a router's container: the names it serves
PRESET_IN_CONTAINER = str(MODEL_DIR / PRESET_FILE)
MODELS_FILE_MAX_BYTES = 64 * 1024
# Arguments the router decides for every child (or that only the router takes).
ROUTER_ARGS = frozenset({"-m", "--host", "--port", "--alias", "--api-key-file", "--no-webui"})


class ModelsFileEntry(BaseModel):
    """One model of a models file."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=4096)
    name: str | None = Field(default=None, max_length=64)
    ctx: int | None = Field(default=None, ge=1, le=1 << 24)  # this model's --ctx
    quant: str | None = Field(default=None, min_length=1, max_length=32)  # this model's --quant


class ModelsFile(BaseModel):
    """A models file: `models:` and a list of {model, name}."""

    model_config = ConfigDict(extra="forbid")
    models: list[ModelsFileEntry] = Field(min_length=1, max_length=8)


@dataclass(frozen=True)
class ModelEntry:
    """A model to serve and the name requests select it by."""

    name: str
    ref_text: str
    ctx: int | None = None  # None: the command's --ctx
    quant: str | None = None  # None: the command's --quant


def check_model_name(name: str, what: str = "model name") -> str:
    """A name safe as an INI section, a file name and a request's `model`."""
    if not MODEL_NAME_RE.fullmatch(name):
        raise InvalidRequest(f"invalid {what} {shown(name)}", MODEL_NAME_HINT)
    return name


def default_model_name(ref_text: str) -> str:
    """The name a model is served as when none is given: its alias (catalog id, file stem)."""
    alias = model_alias(ref_text).replace("/", "-")
    if not MODEL_NAME_RE.fullmatch(alias):
        raise InvalidRequest(
            f"{shown(ref_text)} gives no usable model name",
            "Name it in a --models-file (models: [{model: ..., name: ...}]).",
        )
    return alias


def entries_from_refs(refs: list[str]) -> list[ModelEntry]:
    """MODEL arguments as entries named by their aliases."""
    return [ModelEntry(default_model_name(r), r) for r in refs]


def parse_models_file(text: str, source: str) -> list[ModelEntry]:
    """A models file's text as entries; InvalidDataFile or InvalidRequest when it is not one."""
    if len(text.encode("utf-8", "surrogatepass")) > MODELS_FILE_MAX_BYTES:
        raise InvalidRequest(f"{source} is larger than {MODELS_FILE_MAX_BYTES} bytes")
    data = parse_yaml_model(text, ModelsFile, source)
    out = []
    for i, e in enumerate(data.models):
        ref = check_line(e.model, source, f"models[{i}].model")
        name = check_model_name(e.name, f"models[{i}].name") if e.name else None
        quant = check_line(e.quant, source, f"models[{i}].quant") if e.quant else None
        out.append(ModelEntry(name or default_model_name(ref), ref, e.ctx, quant))
    return out


def model_in_container(name: str) -> str:
    """Where model `name`'s file is mounted."""
    return str(MODEL_DIR / f"{check_model_name(name)}.gguf")


def preset_section(args: list[str]) -> list[tuple[str, str]]:
    """One model's llama-server arguments as preset keys and values (flags as `true`)."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        flag = args[i]
        if not flag.startswith("-"):
            raise InvalidRequest(f"unexpected llama-server argument {shown(flag)}")
        has_value = i + 1 < len(args) and not args[i + 1].startswith("-")
        if flag not in ROUTER_ARGS:
            out.append((flag.lstrip("-"), args[i + 1] if has_value else "true"))
        i += 2 if has_value else 1
    return out


def _check_ini(key: str, value: str) -> None:
    if not INI_KEY_RE.fullmatch(key):
        raise UntrustedValue("models preset", "key", key, "is not an INI key")
    if INI_VALUE_BAD.search(value) or value != value.strip() or not value:
        raise UntrustedValue(
            "models preset", key, value, "cannot be written in an INI value safely",
            "Use a path or value without line breaks, '[', ']', '=', ';' or '#'.",
        )  # fmt: skip


def render_preset(sections: dict[str, list[tuple[str, str]]]) -> str:
    """The preset INI text: one section per model name; read back before it is returned."""
    lines = ["; Written by deployer: one section per model, its llama-server arguments.",
             "version = 1", ""]  # fmt: skip
    for name, pairs in sections.items():
        check_model_name(name)
        lines.append(f"[{name}]")
        for key, value in pairs:
            _check_ini(key, value)
            lines.append(f"{key} = {value}")
        lines.append("")
    text = "\n".join(lines)
    if read_preset(text) != {n: dict(p) for n, p in sections.items()}:
        raise InvalidRequest("the models preset does not read back as written (a deployer bug)")
    return text


_SECTION = re.compile(r"^\[[ \t]*([^\]]*?)[ \t]*\][ \t]*$")
_KV = re.compile(r"^([a-zA-Z_][a-zA-Z0-9_.-]*)[ \t]*=[ \t]*(.*?)(?:[ \t]*[;#].*)?$")


def read_preset(text: str) -> dict[str, dict[str, str]]:
    """Sections and their keys as llama-server's preset parser reads them (top level omitted)."""
    out: dict[str, dict[str, str]] = {}
    section: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith((";", "#")):
            continue
        if m := _SECTION.match(line):
            section = m.group(1)
            out[section] = {}
        elif (m := _KV.match(line)) is not None:
            if section is not None:
                out[section][m.group(1)] = m.group(2)
        else:
            raise InvalidRequest(f"models preset line {shown(line)} does not parse")
    return out


def router_args(
    *, models_max: int, host: str, port: int, api_key_file: str | None,
    preset: str = PRESET_IN_CONTAINER,
) -> list[str]:  # fmt: skip
    """The router's own arguments: the preset, the cap, where it listens, its key."""
    args = ["--models-preset", preset, "--models-max", str(models_max)]
    args += ["--host", host, "--port", str(port), "--no-webui"]
    if api_key_file is not None:
        args += ["--api-key-file", api_key_file]
    return args


@dataclass(frozen=True)
class ModelState:
    """One model as GET /models reports it."""

    name: str
    status: str  # loaded, loading, unloaded, sleeping, downloading, or unknown

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "status": self.status}


KNOWN_STATES = frozenset({"loaded", "loading", "unloaded", "sleeping", "downloading"})


def parse_models_status(body: object) -> list[ModelState]:
    """GET /models's JSON (hostile): each model's id and status; odd entries are skipped."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return []
    out = []
    for item in body["data"][:64]:
        if not isinstance(item, dict):
            continue
        name, status = item.get("id"), item.get("status")
        if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
            continue
        value = status.get("value") if isinstance(status, dict) else None
        out.append(ModelState(name, value if value in KNOWN_STATES else "unknown"))
    return out


def names_label(names: list[str]) -> str:
    """The `io.deployer.models` label: the names, comma-separated."""
    return ",".join(check_model_name(n) for n in names)


def names_from_label(text: str) -> list[str]:
    """The names in an `io.deployer.models` label (hostile: invalid parts are dropped)."""
    return [n for n in text.split(",")[:64] if MODEL_NAME_RE.fullmatch(n)]


@dataclass(frozen=True)
class RouterSetup:
    """What turns a rendered single-model bundle into a router's (render_plan's `router`)."""

    names: list[str]
    quants: list[str]
    model_paths: list[str]  # host paths, one file per name
    preset_text: str
    preset_source: str  # the preset's host path (deploy) or its path beside the files (render)
    models_max: int
    memory_request_bytes: int  # the largest set's host memory, router included
    native_preset: str | None = None  # systemd: where the preset is installed on the host
    file_bytes_total: int = 0  # every model's file: what a k8s volume must hold


def native_preset_path(name: str) -> str:
    """Where a systemd router's preset is installed (beside its API key)."""
    return f"/etc/deployer/{name}/{PRESET_FILE}"


def router_mounts(setup: RouterSetup) -> list[Mount]:
    """Every model read-only at /models/NAME.gguf, and the preset beside them."""
    mounts = [
        Mount(p, model_in_container(n)) for n, p in zip(setup.names, setup.model_paths, strict=True)
    ]
    return [*mounts, Mount(setup.preset_source, PRESET_IN_CONTAINER)]


def router_limits(setup: RouterSetup, pids: int) -> ResourceLimits:
    """The container's limits: the largest set's memory (router included) plus headroom."""
    return memory_limits(setup.memory_request_bytes, pids)


def router_labels(labels: dict[str, str], setup: RouterSetup) -> dict[str, str]:
    """The single-model labels with every model and quant named."""
    return {
        **labels,
        "io.deployer.model": names_label(setup.names),
        "io.deployer.quant": ",".join(setup.quants),
        ROUTER_LABEL: names_label(setup.names),
    }
