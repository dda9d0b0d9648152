"""Fleet inventory: the hosts of an `ansible-inventory --list` answer, each validated once.

Every value here comes from an inventory someone else may have written. Each host name and
each `deployer_*` variable is checked for its exact form where it is read, so everything
downstream (paths in the run folder and on the hosts, the `--limit` pattern, compose commands,
Ansible variables) is built only from values that cannot traverse, inject or be templated.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from deployer.core.errors import InvalidRequest
from deployer.core.fit.plan import MAX_PROMPT_CACHE_MIB
from deployer.core.model.adapter import MAX_ADAPTERS, parse_lora
from deployer.core.untrusted import (
    DEPLOYMENT_NAME_MAX,
    DEPLOYMENT_NAME_RE,
    IMAGE_RE,
    UntrustedValue,
    check_line,
    shown,
)
from deployer.core.untrusted import check_image as check_image  # also for `fleet --image`

# Variables an inventory may set per host or group (the first four are the contract).
HOST_VARS = {
    "deployer_profile": "a profile id, or 'detect' (from the host's facts and nvidia-smi)",
    "deployer_model": "anything 'deployer deploy' accepts: catalog id, demo, .gguf path, hf://",
    "deployer_backend": "llamacpp (default) or ollama",
    "deployer_port": "host port on 127.0.0.1 (default 8080)",
    "deployer_name": "deployment name (default: the model's name and the inventory host)",
    "deployer_quant": "force a quantization",
    "deployer_ctx": "context length",
    "deployer_prompt_cache": "MiB of host memory for llama-server's prompt cache (default 0: off)",
    "deployer_image": "runtime image (default: the pinned official image)",
    "deployer_root": "folder on the host for artifacts and weights (default /var/lib/deployer)",
    "deployer_expose": "publish on 0.0.0.0 with an API key generated on the host",
    "deployer_lora": "LoRA adapters: a list of ADAPTER[:SCALE] (a .gguf here, or hf://ORG/REPO[/FILE])",
}
DEFAULT_ROOT = "/var/lib/deployer"
DEFAULT_PORT = 8080
DETECT = "detect"
MODELS_DIR = "models"  # under the root, next to the deployment folders

# A host name is a run-folder path component, a key of the playbook variables and part of the
# `--limit` pattern: letters, digits, '_', '.', '-' only (no '/', ',', ':', '!', '&', '*', '~').
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
# The one deployment-name rule (it becomes a folder under the root, a compose project and a
# container name).
NAME_RE, NAME_MAX = DEPLOYMENT_NAME_RE, DEPLOYMENT_NAME_MAX
PROFILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
BACKEND_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
QUANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
# A root is split into commands by Ansible's `command` module: no spaces, no quotes.
ROOT_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
ROOT_MAX = 1024
CTX_MAX = 1 << 24
INT_RE = re.compile(r"^ *[0-9]{1,12} *$")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
MODEL_MAX = 4096
FIX = "Fix the inventory, then run 'deployer fleet plan --inventory FILE'."


@dataclass(frozen=True)
class FleetHost:
    """One inventory host and its validated deployer variables."""

    host: str
    profile: str
    model: str
    backend: str = "llamacpp"
    port: int = DEFAULT_PORT
    name: str | None = None
    quant: str | None = None
    ctx: int | None = None
    image: str | None = None
    root: str = DEFAULT_ROOT
    expose: bool = False
    lora: tuple[str, ...] = ()  # each checked by deployer.core.model.adapter.parse_lora
    prompt_cache_mib: int = 0  # llama-server --cache-ram, held in the host's plan


def _source(host: str) -> str:
    return f"inventory host {shown(host)}"


def _text(host: str, key: str, value: Any, form: re.Pattern[str] | None, *, max_len: int) -> str:
    """A scalar variable as one line of text, refused unless it has `form`."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UntrustedValue(_source(host), key, _brief(value), "is not text", FIX)
    text = check_line(value if isinstance(value, str) else _int_text(host, key, value),
                      _source(host), key, max_len=max_len)  # fmt: skip
    if form is not None and not form.fullmatch(text):
        raise UntrustedValue(_source(host), key, text, f"does not match {form.pattern}", FIX)
    return text


def _brief(value: Any) -> str:
    """A short description of a value of the wrong type (never a huge or nested repr)."""
    if isinstance(value, Mapping | list | tuple):
        return f"<{type(value).__name__} of {len(value)}>"
    return type(value).__name__ if isinstance(value, int) else str(value)[:200]


def _int_text(host: str, key: str, value: int) -> str:
    if abs(value) >= 10**12:  # also keeps str() below Python's digit limit for huge ints
        raise UntrustedValue(_source(host), key, "<a huge number>", "is out of range", FIX)
    return str(value)


def _as_int(host: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidRequest(
            f"inventory host {shown(host)}: {key} must be a whole number, got {_brief(value)}", FIX
        )
    if isinstance(value, str) and not INT_RE.fullmatch(value):
        raise InvalidRequest(
            f"inventory host {shown(host)}: {key} must be a whole number, got {shown(value)}", FIX
        )
    number = int(value) if isinstance(value, str) else value
    if not low <= number <= high:
        shown_n = str(number) if abs(number) < 10**12 else "a huge number"
        raise InvalidRequest(
            f"inventory host {shown(host)}: {key} {shown_n} is not between {low} and {high}", FIX
        )
    return number


def _as_bool(host: str, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise UntrustedValue(_source(host), key, _brief(value), "is not true or false", FIX)


def check_lora(host: str, value: Any) -> tuple[str, ...]:
    """deployer_lora: a list of ADAPTER[:SCALE] texts, each as --lora takes it."""
    key = "deployer_lora"
    if not isinstance(value, list):
        raise UntrustedValue(_source(host), key, _brief(value), "is not a list", FIX)
    if len(value) > MAX_ADAPTERS:
        raise UntrustedValue(
            _source(host), key, f"<list of {len(value)}>", f"has more than {MAX_ADAPTERS}", FIX
        )
    texts = []
    for item in value:
        if not isinstance(item, str):
            raise UntrustedValue(_source(host), key, _brief(item), "holds an item not text", FIX)
        try:
            parse_lora(item)
        except UntrustedValue as exc:
            raise replace(exc, source=f"{_source(host)} {key}", hint=FIX) from None
        texts.append(item)
    return tuple(texts)


def check_root(host: str, value: Any) -> str:
    """An absolute folder without '.', '..', spaces or quotes, normalised (no trailing '/')."""
    text = _text(host, "deployer_root", value, None, max_len=ROOT_MAX)
    if not text.startswith("/"):
        raise InvalidRequest(
            f"inventory host {shown(host)}: deployer_root must be an absolute path, "
            f"got {shown(text)}",
            "Use a path like /var/lib/deployer.",
        )
    parts = [p for p in text.split("/") if p]
    bad = next((p for p in parts if p in (".", "..") or not ROOT_SEGMENT_RE.fullmatch(p)), None)
    if not parts or bad is not None:
        raise UntrustedValue(
            _source(host), "deployer_root", text,
            "must be a folder below '/' made of letters, digits, '_', '.', '-' (no '.' or '..')",
            "Use a path like /var/lib/deployer.",
        )  # fmt: skip
    return "/" + "/".join(parts)


def check_host(host: Any, groups: set[str]) -> str:
    """An inventory host name usable as a path component, a variable key and a limit pattern."""
    if not isinstance(host, str):
        raise UntrustedValue("inventory", "host name", _brief(host), "is not text", FIX)
    text = check_line(host, "inventory", "host name", max_len=253)
    if not HOST_RE.fullmatch(text):
        raise UntrustedValue(
            "inventory", "host name", text,
            "must be letters, digits, '_', '.' or '-' (starting with a letter or digit)",
            "Name the host with an alias and set its address in ansible_host.",
        )  # fmt: skip
    if text in groups or text in ("all", "ungrouped"):
        raise UntrustedValue(
            "inventory", "host name", text, "is also a group name",
            "Rename the host: '--limit' would select the whole group.",
        )  # fmt: skip
    return text


def host_from_vars(host: str, hv: Mapping[str, Any]) -> FleetHost:
    """One host's deployer variables, each checked for its exact form."""
    unknown = sorted(str(k) for k in hv if str(k).startswith("deployer_") and k not in HOST_VARS)
    if unknown:
        raise InvalidRequest(
            f"inventory host {shown(host)}: unknown variable {shown(unknown[0])}",
            "Known: " + ", ".join(HOST_VARS) + " (see docs/fleet.md).",
        )

    def opt(key: str, form: re.Pattern[str] | None, max_len: int = 255) -> str | None:
        return _text(host, key, hv[key], form, max_len=max_len) if key in hv else None

    name = opt("deployer_name", NAME_RE)
    if name == MODELS_DIR:
        raise UntrustedValue(_source(host), "deployer_name", name, "is the weights folder", FIX)
    ctx = hv.get("deployer_ctx")
    cache = hv.get("deployer_prompt_cache")
    backend = opt("deployer_backend", BACKEND_RE) or "llamacpp"
    cache_mib = 0  # unset (or null, as for deployer_ctx): no prompt cache
    if cache is not None:
        cache_mib = _as_int(host, "deployer_prompt_cache", cache, 0, MAX_PROMPT_CACHE_MIB)
    if cache_mib and backend == "ollama":
        raise InvalidRequest(
            f"inventory host {shown(host)}: deployer_prompt_cache sizes llama-server's prompt "
            "cache; deployer_backend ollama has none to size",
            "Drop deployer_prompt_cache for this host, or set deployer_backend: llamacpp.",
        )
    return FleetHost(
        host=host,
        profile=opt("deployer_profile", PROFILE_RE) or DETECT,
        model=_text(host, "deployer_model", hv["deployer_model"], None, max_len=MODEL_MAX),
        backend=backend,
        port=_as_int(host, "deployer_port", hv.get("deployer_port", DEFAULT_PORT), 1, 65535),
        name=name,
        quant=opt("deployer_quant", QUANT_RE),
        ctx=_as_int(host, "deployer_ctx", ctx, 1, CTX_MAX) if ctx is not None else None,
        image=opt("deployer_image", IMAGE_RE),
        root=check_root(host, hv.get("deployer_root", DEFAULT_ROOT)),
        expose=_as_bool(host, "deployer_expose", hv.get("deployer_expose", False)),
        lora=check_lora(host, hv.get("deployer_lora", [])),
        prompt_cache_mib=cache_mib,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def hosts_from_inventory(listing: Mapping[str, Any]) -> list[FleetHost]:
    """Every host of an `ansible-inventory --list` answer, with its deployer variables.

    A host without `deployer_model` is not part of the fleet's deployments and is left out
    (its name is never used); an inventory with no such host is an error that says which
    variables are expected. Anything malformed is one DeployerError naming the host.
    """
    hostvars = _mapping(_mapping(listing).get("_meta")).get("hostvars")
    hostvars = _mapping(hostvars)
    groups = {str(g) for g in _mapping(listing) if g != "_meta"}
    names: set[str] = {h for h in hostvars if isinstance(h, str)}
    for group, body in _mapping(listing).items():
        members = _mapping(body).get("hosts") if group != "_meta" else None
        if isinstance(members, list):
            names.update(h for h in members if isinstance(h, str))
    hosts: list[FleetHost] = []
    for raw in sorted(names):
        hv = _mapping(hostvars.get(raw))
        if hv.get("deployer_model") is None:
            continue
        hosts.append(host_from_vars(check_host(raw, groups), hv))
    if not hosts:
        raise InvalidRequest(
            "the inventory has no host with deployer_model set",
            "Set deployer_model (and deployer_profile) per host or group; see docs/fleet.md.",
        )
    return hosts


def deployment_name(base: str, host: str) -> str:
    """The default deployment name on a host: the model's name and the inventory host, so
    several inventory entries on one machine never collide; always a valid NAME_RE name."""

    def slug(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

    name = f"{slug(base) or 'model'}-{slug(host) or 'host'}"
    if len(name) > NAME_MAX:
        # Cut, but keep names of long hosts apart: a short digest of the full host name.
        tag = hashlib.sha256(host.encode()).hexdigest()[:6]
        name = f"{name[: NAME_MAX - 7].rstrip('-')}-{tag}"
    return name
