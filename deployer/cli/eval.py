"""`deployer eval`: score targets (deployments, APIs, models deployed for the run) on the
user's own data, side by side (docs/eval.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.params import DetectOpt, JsonOpt, ProfileOpt

_TARGET_HELP = (
    "A deployment name; url=URL,model=M[,key-env=VAR|key-file=PATH][,price-in=USD,"
    "price-out=USD]; or model=REF[,quant=Q] (deployed for the run). Repeatable."
)


@app.command("eval")
def eval_(
    data: Annotated[Path, typer.Argument(help="JSONL file: one item a line (docs/eval.md).")],
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help=_TARGET_HELP)] = None,
    targets_file: Annotated[
        Path | None, typer.Option("--targets", help="YAML file with a 'targets:' list.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="With --quants: the model.")] = None,
    quants: Annotated[
        str | None, typer.Option("--quants", help="Q4_K_M,Q8_0: deploy --model in each, in turn.")
    ] = None,
    judge: Annotated[
        str | None, typer.Option("--judge", help="The target that grades 'judge' scorers.")
    ] = None,
    price_in: Annotated[
        float | None, typer.Option("--price-in", help="USD per 1M input tokens (url targets).")
    ] = None,
    price_out: Annotated[
        float | None, typer.Option("--price-out", help="USD per 1M output tokens (url targets).")
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=32, help="Requests at once per target.")
    ] = 2,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, max=32768, help="For items that give none.")
    ] = 256,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=2.0)] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Sent with every request.")] = 0,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=0.1, max=3600.0, help="Seconds per attempt.")
    ] = 120.0,
    attempts: Annotated[
        int, typer.Option("--attempts", min=1, max=10, help="Tries per request (429/5xx/network).")
    ] = 4,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run folder (default: under the state dir).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this folder.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a report: FILE.md or FILE.html.")
    ] = None,
    profile: ProfileOpt = None,
    detect: DetectOpt = False,
    runtime: Annotated[
        str | None, typer.Option("--runtime", help="container or native, for model targets.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Score models on your own data (JSONL), side by side: score, latency, tokens, cost."""

    def body() -> None:
        from deployer.cli import eval_view, wiring
        from deployer.core.errors import InvalidRequest
        from deployer.core.eval.flow import EvalRequest, run_eval
        from deployer.core.eval.runbook import Settings, build_manifest
        from deployer.core.eval.setup import assemble, check_run_dir_flags, with_prices

        check_run_dir_flags(run_dir, resume, report)
        if resume is not None and not (resume / "manifest.json").is_file():
            raise InvalidRequest(f"--resume {resume}: not a run folder (no manifest.json)")
        specs, judge_spec, loaded = assemble(
            data=data, target=target or [], targets_file=targets_file, model=model,
            quants=quants, judge=judge, read_data=wiring.eval_read_data, read_targets=wiring.eval_read_targets,
        )  # fmt: skip
        specs = with_prices(specs, price_in, price_out)
        wiring.eval_preflight([*specs, *([judge_spec] if judge_spec else [])])
        settings = Settings(temperature=temperature, seed=seed, max_tokens=max_tokens)
        needs_profile = any(t.kind == "model" for t in specs) or profile or detect
        prof = wiring.pick_profile(profile, detect) if needs_profile else None
        manifest = build_manifest(loaded, specs, settings, judge_spec)
        folder = resume or run_dir or wiring.eval_default_run_dir(manifest["key"])
        how = wiring.EvalHow(timeout_s=timeout_s, max_attempts=attempts, profile=prof,
                             runtime=runtime, run_key=manifest["key"])  # fmt: skip
        req = EvalRequest(
            data=loaded, targets=specs, settings=settings, judge=judge_spec,
            concurrency=concurrency,
            profile_hourly=prof.price.usd_per_hour if prof and prof.price else None,
        )  # fmt: skip
        with eval_view.ProgressView(enabled=True) as view:
            outcome = run_eval(req, wiring.eval_edges(folder, how, view.note), view)
        eval_view.show(outcome, str(folder), report, as_json=as_json)
        if outcome.summaries and not any(t.answered for t in outcome.summaries):
            from deployer.core.errors import EvalNothingAnswered

            raise EvalNothingAnswered(len(outcome.summaries))

    run_guarded(body)
