"""What `deployer eval` asks: targets, given as `--target TEXT` or a `--targets FILE.yaml` list.

Three kinds (docs/eval.md):
  NAME                                  a deployment (deployer ps): its endpoint and API key file
  url=URL,model=M[,key-env=VAR|key-file=PATH][,price-in=USD,price-out=USD]
                                        any OpenAI-compatible endpoint, a closed API included
  model=REF[,quant=Q]                   deployed on this machine for the run, removed after
Every kind takes name=LABEL (how reports call it) and hourly=USD (a self-hosted machine's
price). A key is never given on the command line or in a targets file: only the name of the
environment variable or the path of the file that holds it.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from deployer.core.datafiles import parse_yaml_model
from deployer.core.errors import InvalidRequest
from deployer.core.untrusted import DEPLOYMENT_NAME_RE, shown

TargetKind = Literal["deployment", "url", "model"]
MAX_TARGETS = 16
MAX_PRICE_USD = 100_000.0
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,63}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}$")
_KEYS = ("name", "deployment", "url", "model", "quant", "key-env", "key-file", "price-in",
         "price-out", "hourly")  # fmt: skip
_SECRET_KEYS = ("key", "api-key", "api_key", "token", "password")


@dataclass(frozen=True)
class TargetSpec:
    """One target, checked; it holds where its key is, never the key."""

    kind: TargetKind
    label: str
    deployment: str | None = None
    url: str | None = None  # the API base, ending in /v1
    model: str | None = None  # url: the model name sent; model: the reference deployed
    quant: str | None = None
    key_env: str | None = None
    key_file: str | None = None
    price_in: float | None = None  # USD per 1M input tokens
    price_out: float | None = None  # USD per 1M output tokens
    hourly: float | None = None  # USD per hour of the machine serving it

    def identity(self) -> dict[str, Any]:
        """What the run folder records and hashes (no key: only where it is kept)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def self_hosted(self) -> bool:
        """Served by a deployment on a machine of ours (priced by the hour)."""
        return self.kind != "url"


def api_base(url: str, source: str) -> str:
    """An http(s) URL checked and turned into the API base ending in /v1."""
    if len(url) > 2048:
        raise InvalidRequest(f"{source}: URL longer than 2048 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            f"{source}: {shown(url)} is not an http(s) URL", "e.g. url=https://api.openai.com/v1"
        )
    if parts.username or parts.password:
        raise InvalidRequest(
            f"{source}: the URL carries credentials",
            "Put the key in an environment variable and pass key-env=VAR.",
        )
    if parts.query or parts.fragment:
        raise InvalidRequest(f"{source}: the URL has a query or fragment; give the API base only")
    base = url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


def _price(value: object, key: str, source: str) -> float:
    try:
        price = float(str(value))
    except ValueError:
        raise InvalidRequest(f"{source}: {key} {shown(value)} is not a number of USD") from None
    if not math.isfinite(price) or not 0 <= price <= MAX_PRICE_USD:
        raise InvalidRequest(f"{source}: {key} must be between 0 and {MAX_PRICE_USD:g} USD")
    return price


def _label(fields: dict[str, str], default: str, source: str) -> str:
    label = fields.get("name", default)
    if not LABEL_RE.fullmatch(label):
        raise InvalidRequest(
            f"{source}: name {shown(label)} is not a label",
            "Use letters, digits and . _ : @ / + -, at most 64 characters (name=LABEL).",
        )
    return label


def target_from_fields(fields: dict[str, str], source: str) -> TargetSpec:
    """A target from its key=value fields (the --target syntax, or one targets-file entry)."""
    for key in fields:
        _refuse_secret(key, source)
        if key not in _KEYS:
            raise InvalidRequest(
                f"{source}: unknown field {shown(key)}", f"Use {', '.join(_KEYS)}."
            )
    prices = {
        k: _price(fields[k], k, source) for k in ("price-in", "price-out", "hourly") if k in fields
    }
    if "key-env" in fields and not ENV_RE.fullmatch(fields["key-env"]):
        raise InvalidRequest(f"{source}: key-env {shown(fields['key-env'])} is not a variable name")
    if "key-env" in fields and "key-file" in fields:
        raise InvalidRequest(f"{source}: give key-env or key-file, not both")
    for key in ("model", "quant"):
        if key in fields and not MODEL_NAME_RE.fullmatch(fields[key]):
            raise InvalidRequest(f"{source}: {key} {shown(fields[key])} is not a model name")
    common: dict[str, Any] = {
        "price_in": prices.get("price-in"), "price_out": prices.get("price-out"),
        "hourly": prices.get("hourly"),
    }  # fmt: skip
    if "url" in fields:
        _refuse(fields, ("deployment", "quant"), "url", source)
        base = api_base(fields["url"], source)
        model = fields.get("model", "default")
        host = urlsplit(base).netloc
        return TargetSpec(
            "url", _label(fields, f"{host}/{model}", source), url=base, model=model,
            key_env=fields.get("key-env"), key_file=fields.get("key-file"), **common,
        )  # fmt: skip
    if "deployment" in fields:
        _refuse(fields, ("model", "quant", "key-env", "key-file"), "deployment", source)
        name = fields["deployment"]
        if not DEPLOYMENT_NAME_RE.fullmatch(name):
            raise InvalidRequest(f"{source}: {shown(name)} is not a deployment name")
        return TargetSpec("deployment", _label(fields, name, source), deployment=name, **common)
    if "model" in fields:
        _refuse(fields, ("key-env", "key-file"), "model", source)
        model, quant = fields["model"], fields.get("quant")
        default = f"{model}:{quant}" if quant else model
        return TargetSpec(
            "model", _label(fields, default, source), model=model, quant=quant, **common
        )
    raise InvalidRequest(f"{source}: say what to ask: a deployment name, url=... or model=...")


def _refuse_secret(key: str, source: str) -> None:
    if key in _SECRET_KEYS:
        raise InvalidRequest(
            f"{source}: a key is never given as a value ({key}=)",
            "Use key-env=VARIABLE (an environment variable) or key-file=PATH.",
        )


def _refuse(fields: dict[str, str], keys: tuple[str, ...], kind: str, source: str) -> None:
    for key in keys:
        if key in fields:
            raise InvalidRequest(f"{source}: {key}= does not go with {kind}=")


_USERINFO_RE = re.compile(r"//[^/@]*@")
_QUERY_RE = re.compile(r"\?[^,]*")


def redacted(text: str) -> str:
    """A --target as it may be quoted in a message: a key given as a value (refused anyway)
    and a URL's user:password@ and query replaced by ***."""
    parts = []
    for part in text.split(","):
        key, sep, _value = part.partition("=")
        if sep and key.strip() in _SECRET_KEYS:
            # A key may hold a ',' itself: what follows it is not quoted either.
            parts.append(f"{key}=***")
            break
        parts.append(part)
    return _QUERY_RE.sub("?***", _USERINFO_RE.sub("//***@", ",".join(parts)))


def parse_target(text: str) -> TargetSpec:
    """One --target: a deployment name, a bare http(s) URL, or key=value fields split by ','."""
    source = f"--target {shown(redacted(text))}"
    if len(text) > 4096:
        raise InvalidRequest(f"{source}: longer than 4096 characters")
    if text.startswith(("http://", "https://")):
        return target_from_fields({"url": text}, source)
    if "=" not in text:
        return target_from_fields({"deployment": text}, source)
    parts = text.split(",")
    for part in parts:  # before any other check, which could quote a piece of the key
        _refuse_secret(part.partition("=")[0].strip(), source)
    fields: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise InvalidRequest(f"{source}: {shown(part)} is not key=value")
        if key in fields:
            raise InvalidRequest(f"{source}: {key} is given twice")
        fields[key] = value.strip()
    return target_from_fields(fields, source)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    name: str | None = None
    deployment: str | None = None
    url: str | None = None
    model: str | None = None
    quant: str | None = None
    key_env: Annotated[str | None, Field(alias="key-env")] = None
    key_file: Annotated[str | None, Field(alias="key-file")] = None
    price_in: Annotated[float | None, Field(alias="price-in")] = None
    price_out: Annotated[float | None, Field(alias="price-out")] = None
    hourly: float | None = None
    # pydantic's own "extra" message would be the only hint; name the secret keys explicitly
    key: str | None = None
    api_key: Annotated[str | None, Field(alias="api-key")] = None


class _TargetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    targets: Annotated[list[_Entry], Field(min_length=1, max_length=MAX_TARGETS)]


def parse_targets_file(text: str, source: str) -> list[TargetSpec]:
    """The `targets:` list of a targets YAML file, each entry as --target's fields."""
    parsed = parse_yaml_model(text, _TargetsFile, source)
    out = []
    for i, entry in enumerate(parsed.targets):
        raw = entry.model_dump(by_alias=True, exclude_none=True)
        fields = {k: str(v) for k, v in raw.items()}
        out.append(target_from_fields(fields, f"{source}: targets[{i}]"))
    return out


def check_targets(targets: list[TargetSpec]) -> list[TargetSpec]:
    """At least one target, at most MAX_TARGETS, labels unique."""
    if not targets:
        raise InvalidRequest(
            "no target", "Give --target (a deployment, url=..., model=...) or --targets FILE."
        )
    if len(targets) > MAX_TARGETS:
        raise InvalidRequest(f"{len(targets)} targets: at most {MAX_TARGETS} in one run")
    seen: set[str] = set()
    for t in targets:
        if t.label in seen:
            raise InvalidRequest(f"two targets are called {t.label!r}", "Give each name=LABEL.")
        seen.add(t.label)
    return targets


def quant_targets(model: str, quants: str) -> list[TargetSpec]:
    """--model REF --quants A,B: one deploy-for-the-run target per quant."""
    names = [q.strip() for q in quants.split(",") if q.strip()]
    if not names:
        raise InvalidRequest("--quants is empty", "e.g. --quants Q4_K_M,Q8_0")
    return [target_from_fields({"model": model, "quant": q}, f"--quants {q}") for q in names]
