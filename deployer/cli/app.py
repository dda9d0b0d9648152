"""The `deployer` command: one typer app, a module per command group, loaded on demand.

`deployer --help` lists every command from the table below without importing any of them, and
`deployer profiles list` imports only the profiles module: start-up stays cheap because the
SDKs (docker, huggingface_hub, ansible_runner), pydantic models and templates of the other
commands are never loaded. A test keeps the table's help lines equal to the commands' own.
"""

from __future__ import annotations

import gc
import importlib
import signal
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup

from deployer import __version__
from deployer.cli.errors import run_guarded, usage_in_one_line

if TYPE_CHECKING:
    # typer vendors click (typer._click) from 0.29 on; its classes are what TyperGroup takes.
    from typer._click import Command, Context, HelpFormatter


class Entry(NamedTuple):
    module: str  # under deployer.cli; importing it registers the command on `app`
    help: str  # the first line of the command's help, shown by `deployer --help`


COMMANDS: dict[str, Entry] = {
    "deploy": Entry(
        "deploy", "Deploy MODEL and prove it with a real completion; print the endpoint."
    ),
    "detect": Entry(
        "detect", "Detect this machine's GPUs, CPU and RAM, and the profile that matches them."
    ),
    "plan": Entry(
        "plan", "Pick the best quant that fits, with its memory, speed under load and cost."
    ),
    "eval": Entry(
        "eval", "Score models on your own data (JSONL), side by side: score, latency, tokens, cost."
    ),
    "pull": Entry("pull", "Download a model's GGUF files, resumable and sha256-verified."),
    "render": Entry(
        "render",
        "Write the files that run MODEL on PROFILE, with a README on running them by hand.",
    ),
    "ps": Entry(
        "deployments", "List deployments: records reconciled with the containers Docker has."
    ),
    "logs": Entry("deployments", "Print a deployment's server log (stdout and stderr)."),
    "down": Entry(
        "deployments",
        "Stop gracefully (SIGTERM, 10 s), then remove container, network, volumes and state.",
    ),
    "top": Entry(
        "top", "Live tokens/s, queue and KV cache use of a deployment, from its Prometheus metrics."
    ),
    "bench": Entry(
        "bench",
        "Measure throughput and latency under load at rising concurrency; predicted beside measured.",
    ),
    "fleet": Entry(
        "fleet", "Many hosts from an Ansible inventory: each gets the plan that fits its hardware."
    ),
    "image": Entry("image", "Runtime images, built locally."),
    "models": Entry("models", "The model catalog: architectures, quant files and licences."),
    "profiles": Entry("profiles", "Hardware profiles: GPUs, Macs and CPU machines."),
}


class LazyGroup(TyperGroup):
    """The root group: a command's module is imported the first time the command is needed."""

    _listing = False

    def list_commands(self, ctx: Context) -> list[str]:
        return [*COMMANDS, *(n for n in self.commands if n not in COMMANDS)]

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        # Listing needs names and help lines only: the table has them.
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def make_context(
        self, info_name: str | None, args: list[str], parent: Context | None = None, **extra: Any
    ) -> Context:
        with usage_in_one_line():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Context) -> Any:
        # A sub-command's flags are parsed inside the root's invoke: one place catches them all.
        with usage_in_one_line():
            return super().invoke(ctx)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        command = self.commands.get(cmd_name)
        if command is not None or cmd_name not in COMMANDS:
            return command
        entry = COMMANDS[cmd_name]
        if self._listing:
            return TyperCommand(
                cmd_name, help=entry.help, short_help=entry.help, callback=lambda: None
            )
        return self._load(cmd_name, entry)

    def _load(self, cmd_name: str, entry: Entry) -> Command | None:
        importlib.import_module(f"deployer.cli.{entry.module}")
        # Rebuild the root from everything registered so far and keep what was asked for.
        built: Any = typer.main.get_group(app)
        for name, command in built.commands.items():
            self.commands.setdefault(name, command)
        return self.commands.get(cmd_name)


app = typer.Typer(
    name="deployer",
    cls=LazyGroup,
    help="Self-host open-weight LLMs: plan the fit, pull, render and deploy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click help and usage errors: typer's rich panels import markdown, pygments and
    # rich.traceback (~120 ms), more than the rest of a start together.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"deployer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Self-host open-weight LLMs with one command."""
    from deployer.cli.wiring import install_data_source

    install_data_source()


def load_all() -> None:
    """Import every command module (tests, docs generation and shell completion need them)."""
    for entry in COMMANDS.values():
        importlib.import_module(f"deployer.cli.{entry.module}")


def main() -> None:
    """Console-script entry point."""
    # A short-lived CLI allocates mostly long-lived objects while importing (pydantic models,
    # the Docker SDK): collecting the young generation every 700 allocations is wasted work
    # (~10% of a deploy's start here). Collection still runs, 30x less often.
    gc.set_threshold(20_000, 20, 20)
    try:
        run_guarded(lambda: app(standalone_mode=True))
    finally:
        # The command has finished (or said why not). A Ctrl-C from here on would land in the
        # interpreter's shutdown, after Python has restored SIGINT's default action, and kill
        # a process whose work is done and saved: the exit status would say "interrupted"
        # about a deploy that is up. Ignored instead.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
