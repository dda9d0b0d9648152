"""What `deployer bench` needs before it sends a request: the endpoint and its API key, what
the server says about itself, the machine's profile and price, and a predictor where the model
is known. Built from the record (a deployment) or the flags (a URL)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.cli import wiring
from deployer.core.bench.policy import default_levels, parse_levels
from deployer.core.bench.sweep import Target
from deployer.core.bench.target import endpoint_of, is_url
from deployer.core.errors import DeployerError, DeploymentNotFound, InvalidRequest
from deployer.core.state.records import DeploymentRecord, check_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from deployer.core.bench.predict import Predictor
    from deployer.core.bench.samples import RequestSample
    from deployer.core.bench.shapes import RequestShape
    from deployer.core.bench.sweep import LoadRunner
    from deployer.core.fit.calibration import Calibrations
    from deployer.core.hardware.profiles import Profile


@dataclass(frozen=True)
class Prepared:
    """A bench's target, ready to send to."""

    target: Target
    api_key: str | None
    served_model: str  # the "model" each request names
    profile: Profile | None
    levels: list[int]
    notes: list[str]


def _record(name: str) -> DeploymentRecord:
    record = wiring.record_store().load(check_name(name))
    if record is None:
        names = [r.name for r in wiring.record_store().scan().records]
        import difflib

        raise DeploymentNotFound(name, difflib.get_close_matches(name, names, n=3))
    return record


def _profile(record: DeploymentRecord | None, profile_id: str | None, detect: bool,
             notes: list[str]) -> Profile | None:  # fmt: skip
    """--profile/--detect, else the deployment's, else (a local deployment) this machine's."""
    from deployer.core.hardware.profiles import get_profile, load_profiles

    if profile_id or detect:
        return wiring.pick_profile(profile_id, detect)
    if record is None:
        return None  # a URL may be another machine: no guess
    here = wiring.pick_profile(None, True)  # a deployment runs on this machine
    if record.profile is None or record.profile == here.id:
        return here  # deployed on a machine detected as it is now (a detected-* profile)
    try:
        return get_profile(record.profile, load_profiles())
    except DeployerError as exc:
        notes.append(f"profile of the record: {exc.message()}; this machine's is used")
    return here


def prepare_target(
    text: str, *, api_key_file: Path | None, concurrency: str | None, max_concurrency: int,
    model: str | None, quant: str | None, profile_id: str | None, detect: bool,
) -> Prepared:  # fmt: skip
    """Resolve NAME|URL, read the key, ask the server, pick levels and profile."""
    from deployer.adapters.bench_files import read_api_key
    from deployer.adapters.loadgen import server_info

    notes: list[str] = []
    record = None if is_url(text) else _record(text)
    endpoint = endpoint_of(text) if record is None else record.endpoint
    key = None
    if api_key_file is not None:
        key = read_api_key(api_key_file)
    elif record is not None and record.api_key_path:
        key = read_api_key(Path(record.api_key_path), "the deployment's API key file")
    info = server_info(endpoint, key)
    if concurrency is not None:
        levels = parse_levels(concurrency)
    else:
        top = info.total_slots or max_concurrency
        if info.total_slots is None:
            notes.append(f"the server did not say its slots (/props): up to {top} streams")
        levels = default_levels(top)
    profile = _profile(record, profile_id, detect, notes)
    price = profile.price.usd_per_hour if profile is not None and profile.price else None
    target = Target(
        label=record.name if record else endpoint, endpoint=endpoint,
        model=record.model if record else model, quant=record.quant if record else quant,
        backend=record.backend if record else "llamacpp", deployment=record is not None,
        total_slots=info.total_slots, ctx=info.ctx,
        profile_id=profile.id if profile else None, usd_per_hour=price,
    )  # fmt: skip
    served = info.model or model or (record.model if record else None) or "default"
    return Prepared(target, key, served, profile, levels, notes)


def calibrations() -> Calibrations:
    """The calibration store `plan` reads (adapters/calibration_store.py)."""
    return wiring.calibrations()


def predictor_for(prep: Prepared, prompt_tokens: int, output_tokens: int) -> Predictor | None:
    """Predictions for the target's model on its profile; None (with a note) where unknown."""
    from deployer.core.bench.predict import Predictor
    from deployer.core.fit.calibration import CalibrationKey

    t, profile = prep.target, prep.profile
    if t.model is None or profile is None:
        prep.notes.append("no prediction: give --model (and --quant) and --profile for a URL")
        return None
    slots = t.total_slots or prep.levels[-1]
    # /props says the context a slot has; llama-server's -c (the plan's ctx) is all slots'
    ctx = None if t.ctx is None else t.ctx * (1 if t.backend == "ollama" else slots)
    try:
        plan = wiring.plan_for(
            t.model, profile, quant=t.quant, ctx=ctx, parallel=slots, kv_type="f16",
            backend=t.backend or "llamacpp",
        )  # fmt: skip
    except DeployerError as exc:
        prep.notes.append(f"no prediction: {exc.message()}")
        return None
    chosen = plan.chosen
    key = CalibrationKey(profile.id, plan.model, chosen.facts.quant, t.backend or "llamacpp")
    known = calibrations().lookup(key)
    return Predictor(
        chosen, profile, key=key, calibration=known, prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
    )  # fmt: skip


def request_shape(prompts: Path | None, prompt_tokens: int, output_tokens: int) -> RequestShape:
    """Synthetic prompts of the lengths asked, or the prompts file's (validated)."""
    from deployer.core.bench.shapes import RequestShape, check_lengths, parse_prompts

    check_lengths(prompt_tokens, output_tokens)
    if prompts is None:
        return RequestShape(prompt_tokens, output_tokens)
    from deployer.adapters.bench_files import read_prompts

    parsed = parse_prompts(read_prompts(prompts), prompts.name)
    return RequestShape(prompt_tokens, output_tokens, parsed, source=prompts.name)


def check_flags(requests: int, timeout_s: float, report: Path | None) -> None:
    """Refuse counts and paths that cannot work, before the server is asked anything."""
    from deployer.core.bench.sweep import check_counts

    check_counts(requests, timeout_s)
    if report is not None:
        if report.suffix.lower() not in (".html", ".htm", ".svg"):
            raise InvalidRequest(f"--report {report} must end in .html or .svg")
        if not report.parent.is_dir():
            raise InvalidRequest(f"--report {report}: its folder does not exist")


def runner(
    prep: Prepared, timeout_s: float, on_request: Callable[[RequestSample], None]
) -> LoadRunner:
    """The HTTP load generator for `prep`'s endpoint."""
    from deployer.adapters.loadgen import HttpLoadRunner

    return HttpLoadRunner(
        prep.target.endpoint, model=prep.served_model, api_key=prep.api_key,
        timeout_s=timeout_s, on_request=on_request,
    )  # fmt: skip


def write_report(path: Path, doc: dict[str, Any]) -> None:
    """The report file, HTML or SVG by its suffix."""
    from deployer.adapters.bench_files import write_report as write
    from deployer.core.bench.report import report_for

    write(path, report_for(path.suffix.lower(), doc))
