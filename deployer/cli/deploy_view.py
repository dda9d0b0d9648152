"""What `deployer deploy` prints: health-wait progress, the endpoint and its proof, a dry run."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from deployer.cli.output import echo, print_block, print_json, styled

if TYPE_CHECKING:
    from deployer.core.serve.deploy_flow import DryRun


class WaitProgress:
    """Waiting-for-healthy lines: one when the status changes, else one every `every_s`.

    Health is polled every 50 ms; a line per poll would be a wall of text.
    """

    def __init__(self, say: Any, every_s: float = 5.0) -> None:
        self._say = say
        self._every_s = every_s
        self._last_status: str | None = None
        self._last_t = 0.0

    def __call__(self, elapsed_s: float, status: str) -> None:
        if status == self._last_status and elapsed_s - self._last_t < self._every_s:
            return
        self._last_status, self._last_t = status, elapsed_s
        self._say(f"  {elapsed_s:5.1f}s {status}")


def say_err(text: str) -> None:
    """A progress line on stderr, shown literally (it quotes paths, model and image names)."""
    echo(text, err=True)


def print_dry_run(done: DryRun, *, as_json: bool) -> None:
    """What a deploy would run: the argv or container spec, then every rendered file."""
    if as_json:
        print_json(done.out)
    elif done.native:
        echo(json.dumps(done.out["argv"]), soft_wrap=True)
    else:
        print_block(json.dumps(done.out["container"], indent=2))
        for rel, text in done.files.items():
            echo(f"--- {rel}", soft_wrap=True)
            print_block(text)


def print_deployed(done: Any, *, as_json: bool) -> None:
    """The endpoint, the smoke test's proof and how to call and tear down the deployment."""
    if as_json:
        print_json(done.as_dict())
        return
    from deployer.core.serve.proof import describe

    rec, s = done.record, done.smoke
    served = done.served_model or rec.model
    echo(
        styled("deployed", "green"), " ", styled(rec.name, "bold"),
        f": {rec.model} {rec.quant} at {rec.endpoint}/v1",
    )  # fmt: skip
    ttft = "n/a" if s.time_to_first_token_ms is None else f"{s.time_to_first_token_ms} ms"
    tps = "n/a" if s.tokens_per_s is None else f"{s.tokens_per_s}"
    echo(
        f"smoke test ({s.kind}): {s.completion_tokens} tokens in {s.seconds:.2f} s, "
        f"first token {ttft}, {tps} tokens/s: {describe(s)}",
        soft_wrap=True,  # one line, whatever the terminal width: greppable
    )
    for note in done.notes if rec.runtime == "container" else []:
        echo(note)
    auth = ""
    if rec.api_key_path:
        echo(f"API key: {rec.api_key_path} (mode 0600; never printed)")
        # quoted for the shell: on macOS the state dir is under "Application Support"
        auth = f' -H "Authorization: Bearer $(cat {shlex.quote(rec.api_key_path)})"'
    echo(
        f"curl {rec.endpoint}/v1/chat/completions -H 'Content-Type: application/json'{auth} "
        f'-d \'{{"model": "{served}", "messages": [{{"role": "user", "content": "Hello"}}]}}\'',
        soft_wrap=True,
    )
    key_py = f"open({rec.api_key_path!r}).read().strip()" if rec.api_key_path else "'none'"
    echo(
        f"python: from openai import OpenAI; c = OpenAI(base_url='{rec.endpoint}/v1', api_key={key_py}); "
        f"print(c.chat.completions.create(model='{served}', messages=[{{'role': 'user', 'content': 'Hello'}}]).choices[0].message.content)",
        soft_wrap=True,
    )
    print_adapters(rec, auth)
    if rec.runtime == "native":
        echo(f"pid {rec.pid}, log: {rec.log_path} (deployer logs {rec.name})")
    echo(f"tear down: deployer down {rec.name}")


def print_adapters(rec: Any, auth: str) -> None:
    """The LoRA adapters loaded, and how to change their scales (llama-server's API)."""
    if not rec.adapters:
        return
    from deployer.core.untrusted import printable

    loaded = ", ".join(
        f"id {i} {a['ref']} at scale {a['scale']:g}" for i, a in enumerate(rec.adapters)
    )
    echo(printable(f"LoRA adapters: {loaded}"), soft_wrap=True)
    if rec.backend != "llamacpp":
        return
    body = '{"id": 0, "scale": 0.5}'
    echo(
        f"change scales for every request: curl {rec.endpoint}/lora-adapters{auth} "
        f"-H 'Content-Type: application/json' -d '[{body}]' (GET lists them); for one "
        f'request add "lora": [{body}] to the completion body (adapters left out: scale 0)',
        soft_wrap=True,
    )
