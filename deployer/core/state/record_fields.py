"""What each field of a deployment record may hold, checked one by one when a record is read.

A record decides what `down` stops and deletes, so a field that does not have the exact form
deploy writes makes the whole record invalid: no guessing, no partial use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from deployer.core.untrusted import (
    DEPLOYMENT_NAME_RE,
    UntrustedValue,
    check_line,
    check_port,
    shown,
)

NAME_RE = DEPLOYMENT_NAME_RE  # what render_plan lets a deployment be named
CONTAINER_ID_RE = re.compile(r"^[0-9a-f]{12,64}$")
DOCKER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
ENDPOINT_RE = re.compile(r"^http://127\.0\.0\.1:([0-9]{1,5})$")
PID_MAX = 4_194_304  # Linux's PID_MAX_LIMIT; pids 0 and 1 are never a server deploy started
MAX_LIST = 1024
# datafiles.ID_RE, not imported from there: `ps` must not load pydantic and yaml
PROFILE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


class FieldInvalid(Exception):
    """One field's problem, in words (the caller adds the file)."""


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldInvalid(f"is {shown(value)}, not a whole number")
    return value


def _text(max_len: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        try:
            return check_line(value, "state", "value", max_len=max_len)
        except UntrustedValue as exc:
            raise FieldInvalid(f"{shown(value)} {exc.problem}") from None

    return check


def _one_of(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise FieldInvalid(f"is {shown(value)}, not one of {', '.join(allowed)}")
        return str(value)

    return check


def _match(regex: re.Pattern[str], form: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not regex.match(value):
            raise FieldInvalid(f"is {shown(value)}, not {form}")
        return value

    return check


# Paths are checked where they are used (down deletes only the key file deploy made; logs reads
# only a regular file), so here they need only be one line: DEPLOYER_STATE_DIR may be relative.
_path = _text(4096)


def _port(value: Any) -> int:
    try:
        return check_port(value, "state")
    except UntrustedValue as exc:
        raise FieldInvalid(f"is {shown(value)}: {exc.problem}") from None


def _pid(value: Any) -> int:
    pid = _int(value)
    if not 2 <= pid <= PID_MAX:
        raise FieldInvalid(f"is {pid}, not a process deploy started")
    return pid


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _list_of(check: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def check_list(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise FieldInvalid(f"is {shown(value)}, not a list")
        if len(value) > MAX_LIST:
            raise FieldInvalid(f"has {len(value)} entries (at most {MAX_LIST})")
        return [check(v) for v in value]

    return check_list


MAX_FIGURE = 1e9  # a bench figure (tokens/s, seconds) above this is not believed
# The last `deployer bench` summary: key -> may it be null.
BENCH_KEYS = {
    "measured_at": False,
    "concurrency": False,
    "meets_target": False,
    "aggregate_tokens_per_s": False,
    "requests_per_s": False,
    "stream_tokens_per_s": True,
    "ttft_p95_s": True,
    "e2e_p95_s": True,
    "prompt_tokens": False,
    "output_tokens": False,
    "errors": False,
}


def _figure(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldInvalid(f"is {shown(value)}, not a number")
    if not 0 <= value <= MAX_FIGURE:  # NaN and inf fail too
        raise FieldInvalid(f"is {shown(value)}, not in 0..{MAX_FIGURE:g}")
    return float(value)


def _count(value: Any) -> int:
    n = _int(value)
    if not 0 <= n <= MAX_FIGURE:
        raise FieldInvalid(f"is {n}, not in 0..{MAX_FIGURE:g}")
    return n


def _bench(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != set(BENCH_KEYS):
        raise FieldInvalid(f"is {shown(value)}, not a bench summary")
    out: dict[str, Any] = {}
    for key, nullable in BENCH_KEYS.items():
        item = value[key]
        try:
            if item is None and nullable:
                out[key] = None
            elif key == "measured_at":
                out[key] = _text(64)(item)
            elif key == "meets_target":
                if not isinstance(item, bool):
                    raise FieldInvalid(f"is {shown(item)}, not true or false")
                out[key] = item
            elif key in ("concurrency", "prompt_tokens", "output_tokens", "errors"):
                out[key] = _count(item)
            else:
                out[key] = _figure(item)
        except FieldInvalid as exc:
            raise FieldInvalid(f"{key} {exc}") from None
    return out


ADAPTER_KEYS = ("ref", "path", "scale")
MAX_ADAPTER_SCALE = 100.0  # deployer.core.model.adapter.MAX_SCALE


def _adapter(value: Any) -> dict[str, Any]:
    """One LoRA adapter a deployment loaded: its reference, file and scale."""
    if not isinstance(value, dict) or set(value) != set(ADAPTER_KEYS):
        raise FieldInvalid(f"is {shown(value)}, not an adapter (ref, path, scale)")
    scale = value["scale"]
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise FieldInvalid(f"scale is {shown(scale)}, not a number")
    if not -MAX_ADAPTER_SCALE <= scale <= MAX_ADAPTER_SCALE:  # NaN and inf fail too
        raise FieldInvalid(f"scale is {shown(scale)}, not in -100..100")
    try:
        return {"ref": _text(4096)(value["ref"]), "path": _path(value["path"]), "scale": scale}
    except FieldInvalid as exc:
        raise FieldInvalid(f"of an adapter {exc}") from None


FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "name": _match(NAME_RE, "a deployment name"),
    "model": _text(4096),  # a local .gguf path may be the model
    "quant": _text(64),
    "backend": _one_of("llamacpp", "ollama"),
    "runtime": _one_of("container", "native"),
    "endpoint": _match(ENDPOINT_RE, "http://127.0.0.1:PORT"),
    "port": _port,
    "created_at": _text(64),
    "container_id": _optional(_match(CONTAINER_ID_RE, "a container id (hex)")),
    "pid": _optional(_pid),
    "image": _optional(_text(1024)),
    "api_key_path": _optional(_path),
    "files": _list_of(_path),
    "networks": _list_of(_match(DOCKER_NAME_RE, "a network name")),
    "volumes": _list_of(_match(DOCKER_NAME_RE, "a volume name")),
    "log_path": _optional(_path),
    "profile": _optional(_match(PROFILE_ID_RE, "a profile id")),
    "bench": _optional(_bench),
    "adapters": _list_of(_adapter),
    "schema_version": _int,
}
REQUIRED = ("name", "model", "quant", "backend", "runtime", "endpoint", "port", "created_at")


def check_fields(raw: dict[str, Any], *, expected_name: str | None) -> dict[str, Any]:
    """`raw` with every field checked; FieldInvalid naming the first that is wrong."""
    unknown = sorted(str(k) for k in set(raw) - set(FIELD_CHECKS))
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise FieldInvalid(f"unknown keys {', '.join(shown(k) for k in unknown[:3])}{more}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise FieldInvalid(f"missing {', '.join(missing)}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = FIELD_CHECKS[key](value)
        except FieldInvalid as exc:
            raise FieldInvalid(f"{key} {exc}") from None
    if expected_name is not None and out["name"] != expected_name:
        raise FieldInvalid(f"name {shown(out['name'])} is not its file's name")
    end = ENDPOINT_RE.fullmatch(out["endpoint"])
    if end is None or int(end.group(1)) != out["port"]:
        raise FieldInvalid(f"endpoint {shown(out['endpoint'])} is not on port {out['port']}")
    return out
