"""From `deployer eval`'s flags to a checked run: the data, the targets, the judge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from deployer.core.errors import InvalidRequest
from deployer.core.eval.items import EvalData, parse_items
from deployer.core.eval.targets import (
    TargetSpec,
    check_targets,
    parse_target,
    parse_targets_file,
    quant_targets,
)


def check_run_dir_flags(run_dir: Path | None, resume: Path | None, report: Path | None) -> None:
    """--run-dir and --resume are one folder: not both; --report ends in .md or .html."""
    if run_dir is not None and resume is not None:
        raise InvalidRequest("give --run-dir or --resume, not both")
    if report is not None and report.suffix.lower() not in (".md", ".html", ".htm"):
        raise InvalidRequest(f"--report {report}: name a .md or .html file")


def _key_file_beside(spec: TargetSpec, targets_file: Path) -> TargetSpec:
    """A relative key-file in a targets file names a file beside it (as a compose file's paths
    do), not one in whatever folder the command happens to run from."""
    key = spec.key_file
    if key is None or key.startswith("~") or Path(key).is_absolute():
        return spec
    return replace(spec, key_file=str(targets_file.parent / key))


def assemble(
    *, data: Path, target: list[str], targets_file: Path | None, model: str | None,
    quants: str | None, judge: str | None, read_data: Callable[[Path], tuple[str, str]],
    read_targets: Callable[[Path], str],
) -> tuple[list[TargetSpec], TargetSpec | None, EvalData]:  # fmt: skip
    """The targets (in the order given: --target, --targets, --model/--quants), the judge and
    the parsed data; refused when a judge scorer has no --judge."""
    specs = [parse_target(t) for t in target]
    if targets_file is not None:
        from_file = parse_targets_file(read_targets(targets_file), str(targets_file))
        specs += [_key_file_beside(s, targets_file) for s in from_file]
    if (model is None) != (quants is None):
        raise InvalidRequest(
            "--model and --quants go together", "e.g. --model demo --quants Q4_K_M"
        )
    if model is not None and quants is not None:
        specs += quant_targets(model, quants)
    check_targets(specs)
    judge_spec = parse_target(judge) if judge else None
    text, sha = read_data(data)
    loaded = parse_items(text, str(data), sha)
    if loaded.needs_judge and judge_spec is None:
        raise InvalidRequest(
            "the data has 'judge' scorers", "Name the judge model: --judge TARGET."
        )
    return specs, judge_spec, loaded


def with_prices(
    specs: list[TargetSpec], price_in: float | None, price_out: float | None
) -> list[TargetSpec]:
    """--price-in/--price-out for every url target that gives no price of its own."""
    if price_in is None and price_out is None:
        return specs
    for value, flag in ((price_in, "--price-in"), (price_out, "--price-out")):
        if value is not None and not 0 <= value <= 100_000:
            raise InvalidRequest(f"{flag} must be between 0 and 100000 USD per 1M tokens")
    out = []
    for t in specs:
        if t.kind == "url" and t.price_in is None and t.price_out is None:
            t = replace(t, price_in=price_in or 0.0, price_out=price_out or 0.0)
        out.append(t)
    return out
