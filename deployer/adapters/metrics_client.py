"""Read a llama-server's /metrics and /slots over HTTP: bounded reads, hostile text parsed by
prometheus-client's own exposition parser, every value checked before core sees it."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from deployer.adapters.keyed_http import open_direct
from deployer.core.errors import MetricsInvalid, MetricsUnavailable
from deployer.core.serve.metrics import (
    GAUGES,
    METRICS_PATH,
    PREFIX,
    REQUIRED,
    SLOTS_PATH,
    TOKENS_MAX,
    KvUse,
    MetricsSample,
)
from deployer.core.untrusted import printable

# llama-server's /metrics is about 3 KB; /slots carries each slot's prompt and output text.
MAX_METRICS_BYTES = 1 << 20
MAX_SLOTS_BYTES = 32 << 20
MAX_SLOTS = 4096
MAX_CELLS = 1 << 40


class _Refused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


@dataclass
class HttpMetricsSource:
    """One deployment's metrics (deployer.core.serve.metrics.MetricsSource)."""

    name: str
    endpoint: str
    api_key: str | None = field(default=None, repr=False)  # never shown
    timeout_s: float = 5.0

    def sample(self, taken_at_s: float) -> MetricsSample:
        """Read /metrics, then /slots for the KV cache use (None when /slots says nothing)."""
        body, started = self._get(METRICS_PATH, MAX_METRICS_BYTES)
        values = parse_metrics(self.name, self.endpoint, body)
        return MetricsSample(
            taken_at_s=taken_at_s, values=values, kv=self._kv(), started_at=started
        )

    def _kv(self) -> KvUse | None:
        try:
            body, _ = self._get(SLOTS_PATH, MAX_SLOTS_BYTES)
        except MetricsUnavailable:
            return None  # slots off (--no-slots) or too large: KV use is shown as unknown
        return parse_slots(self.name, self.endpoint, body)

    def _get(self, path: str, limit: int) -> tuple[bytes, str | None]:
        headers = {"Accept": "text/plain"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(f"{self.endpoint}{path}", headers=headers)
        try:
            try:
                with open_direct(req, self.timeout_s) as resp:
                    body = resp.read(limit + 1)
                    started = resp.headers.get("Process-Start-Time-Unix")
            except urllib.error.HTTPError as exc:
                raise _Refused(exc.code, exc.read(4096)) from None
        except _Refused as exc:
            raise self._refusal(path, exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MetricsUnavailable(
                self.name, self.endpoint, f"not answering ({printable(str(reason))[:120]})"
            ) from None
        if len(body) > limit:
            raise MetricsUnavailable(
                self.name, self.endpoint, f"{path} is larger than {limit} bytes"
            )
        return body, (printable(started)[:32] if started else None)

    def _refusal(self, path: str, exc: _Refused) -> MetricsUnavailable:
        if exc.status == 401:
            return MetricsUnavailable(
                self.name,
                self.endpoint,
                f"{path} refused the API key (401)",
                "Its key file may have been replaced; redeploy it.",
            )
        if exc.status == 501:
            return MetricsUnavailable(
                self.name,
                self.endpoint,
                f"{path} is turned off in this server (501)",
                "Redeploy it: deployer starts llama-server with --metrics.",
            )
        return MetricsUnavailable(self.name, self.endpoint, f"{path} answered HTTP {exc.status}")


def parse_metrics(name: str, endpoint: str, body: bytes) -> dict[str, float]:
    """The llamacpp: samples without labels, each finite and not negative; MetricsInvalid when the
    text does not parse or lacks what `top` needs."""
    try:
        text = body.decode("utf-8")
        families = list(text_string_to_metric_families(text))
    except (UnicodeDecodeError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise MetricsInvalid(
            name, endpoint, f"not Prometheus text ({type(exc).__name__})"
        ) from None
    values: dict[str, float] = {}
    for family in families:
        for s in family.samples:
            if not s.name.startswith(PREFIX) or s.labels:
                continue
            if not math.isfinite(s.value) or s.value < 0:
                raise MetricsInvalid(name, endpoint, f"{printable(s.name)[:80]} is {s.value}")
            # llama-server types n_tokens_max a counter without `_total`; the parser then names
            # its sample with `_total`, Prometheus itself keeps the name as written.
            key = TOKENS_MAX if s.name == f"{TOKENS_MAX}_total" else s.name
            values[key] = float(s.value)
    missing = [m for m in REQUIRED if m not in values]
    if missing:
        raise MetricsInvalid(name, endpoint, f"no {', '.join(missing)}")
    return {k: v for k, v in values.items() if k in REQUIRED or k in GAUGES}


def parse_slots(name: str, endpoint: str, body: bytes) -> KvUse:
    """KV cells held and available, summed over /slots (`n_prompt_tokens` holds the prompt and
    the tokens generated so far, `n_ctx` a slot's context); MetricsInvalid on anything else."""
    try:
        slots = json.loads(body)
    except (ValueError, RecursionError):
        raise MetricsInvalid(name, endpoint, f"{SLOTS_PATH} is not JSON") from None
    if not isinstance(slots, list) or not 0 < len(slots) <= MAX_SLOTS:
        raise MetricsInvalid(name, endpoint, f"{SLOTS_PATH} is not a list of slots")
    used = total = decoded = 0
    for slot in slots:
        if not isinstance(slot, dict):
            raise MetricsInvalid(name, endpoint, f"{SLOTS_PATH} holds a non-object")
        n_ctx = slot.get("n_ctx")
        held = slot.get("n_prompt_tokens", 0)
        nexts = slot.get("next_token", [])
        if (
            not isinstance(nexts, list)
            or len(nexts) > 1
            or not all(isinstance(n, dict) for n in nexts)
        ):
            raise MetricsInvalid(name, endpoint, "a slot's next_token is not one object")
        gen = nexts[0].get("n_decoded", 0) if nexts else 0
        for what, v in (("n_ctx", n_ctx), ("n_prompt_tokens", held), ("n_decoded", gen)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_CELLS:
                raise MetricsInvalid(
                    name, endpoint, f"a slot's {what} is {printable(repr(v))[:40]}"
                )
        assert isinstance(n_ctx, int) and isinstance(held, int) and isinstance(gen, int)
        used += min(held, n_ctx)
        total += n_ctx
        decoded += gen
    return KvUse(used_cells=used, total_cells=total, in_flight_generated=decoded)
