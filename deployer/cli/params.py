"""Shared typer parameter aliases: one definition for each flag more than one command takes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LoadModeOpt = Annotated[
    str | None,
    typer.Option(
        "--load-mode",
        help="How llama-server holds the weights: mmap (default), none, mlock, mmap+mlock, dio. "
        "The plan budgets memory for it.",
    ),
]
PromptCacheOpt = Annotated[
    int,
    typer.Option(
        "--prompt-cache",
        metavar="MIB",
        help="Host RAM (MiB) for llama-server's prompt cache (--cache-ram): earlier "
        "conversations' KV kept so a returning one skips its prefill. Counted in the plan "
        "and its memory limit. 0 (default): off.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="Hardware profile id (deployer profiles list)."),
]
DetectOpt = Annotated[
    bool, typer.Option("--detect", help="Use the detected hardware of this machine.")
]

# deploy, plan, render: what to run and how it is planned
_MODEL_HELP = "Catalog id, demo, a .gguf path or hf://ORG/REPO[:QUANT]."
ModelArg = Annotated[str, typer.Argument(help=_MODEL_HELP)]
ModelOrBestArg = Annotated[str | None, typer.Argument(help=_MODEL_HELP)]
ModelsArg = Annotated[
    list[str] | None, typer.Argument(help=_MODEL_HELP + " Several: one endpoint, a router.")
]
ModelsOrBestArg = Annotated[
    list[str] | None, typer.Argument(help=_MODEL_HELP + " Several: one endpoint, a router.")
]
MaxLoadedOpt = Annotated[
    int | None,
    typer.Option("--max-loaded", help="Several models: most loaded at once (default: all)."),
]
ModelsFileOpt = Annotated[
    Path | None,
    typer.Option("--models-file", help="YAML: models: [{model: REF, name: NAME}, ...]."),
]
BackendOpt = Annotated[str, typer.Option("--backend", help="llamacpp or ollama.")]
CtxOpt = Annotated[int | None, typer.Option("--ctx", help="Context length (tokens).")]
ParallelOpt = Annotated[int, typer.Option("--parallel", help="Parallel slots.")]
KvTypeOpt = Annotated[str, typer.Option("--kv-type", help="KV cache type: f16, q8_0, q4_0.")]
QuantOpt = Annotated[str | None, typer.Option("--quant", help="Force a quantization.")]
LoraOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--lora",
        help="LoRA adapter to load, ADAPTER[:SCALE] (repeat): a .gguf or hf://ORG/REPO[/FILE]; "
        "scale 1 by default.",
    ),
]
NameOpt = Annotated[str | None, typer.Option("--name", help="Deployment name.")]

# fleet: every sub-command reads the same inventory the same way
InventoryOpt = Annotated[
    Path, typer.Option("--inventory", "-i", help="Ansible inventory (YAML or JSON).")
]
ForksOpt = Annotated[int, typer.Option("--forks", help="Hosts Ansible works on at once.")]
FleetImageOpt = Annotated[
    str | None, typer.Option("--image", help="Runtime image for hosts without deployer_image.")
]

# bench, fleet bench: the load sweep and its latency target (in a fleet, per host)
ConcurrencyOpt = Annotated[
    str | None,
    typer.Option(
        "--concurrency",
        help="Levels to run, e.g. 1,2,4 (default: 1, 2, 4, ... up to the server's slots).",
    ),
]
MaxConcurrencyOpt = Annotated[
    int,
    typer.Option(
        "--max-concurrency", help="Top level when a server does not say its slots.", min=1, max=1024
    ),
]
RequestsOpt = Annotated[
    int,
    typer.Option("--requests", help="Requests per level (at least the level's streams).", min=1),
]
PromptTokensOpt = Annotated[
    int, typer.Option("--prompt-tokens", help="Synthetic prompt length (about, in tokens).")
]
OutputTokensOpt = Annotated[
    int, typer.Option("--output-tokens", help="Tokens each answer generates.")
]
PromptsOpt = Annotated[
    Path | None,
    typer.Option(
        "--prompts",
        help='JSONL file of your prompts: {"messages": [...]} or {"prompt": "..."} a line.',
    ),
]
MaxTtftOpt = Annotated[
    float | None, typer.Option("--max-ttft-s", help="Target: TTFT p95 at most this (s).")
]
MinStreamTpsOpt = Annotated[
    float | None,
    typer.Option("--min-stream-tokens-per-s", help="Target: median stream speed at least this."),
]
MaxE2eOpt = Annotated[
    float | None, typer.Option("--max-e2e-s", help="Target: end-to-end p95 at most this (s).")
]
RequestTimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds one request may take.")
]
