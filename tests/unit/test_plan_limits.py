"""Impossible fit inputs: slot counts and contexts llama.cpp refuses, and slots with no room.

llama.cpp refuses more than LLAMA_MAX_SEQ (256) sequences, llama-server reads -c as a 32-bit
int, and -c is split evenly over the slots: a plan must never "fit" by giving each slot a
context too small to hold a prompt (at --parallel 20000 that was zero cells).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deployer.core.errors import InvalidRequest
from deployer.core.fit.plan import MAX_CTX, MAX_PARALLEL, MIN_CTX, PlanRequest, make_plan
from deployer.core.hardware.profiles import get_profile
from deployer.core.model.catalog import get_model
from deployer.core.model.facts import ModelFacts
from deployer.core.model.weights import facts_from_catalog


def _facts(ctx_train: int | None = None) -> ModelFacts:
    facts = facts_from_catalog(get_model("llama-3.1-8b-instruct"), "Q4_K_M")
    if ctx_train is None:
        return facts
    return facts.model_copy(update={"arch": facts.arch.model_copy(update={"ctx_train": ctx_train})})


def _plan(req: PlanRequest, facts: ModelFacts | None = None) -> None:
    make_plan("m", [facts or _facts()], get_profile("cpu-x86-32c-128gb"), req)


@pytest.mark.parametrize("parallel", [0, -1, MAX_PARALLEL + 1, 20000, 2**63])
def test_parallel_outside_llama_cpp_range_is_refused(parallel: int) -> None:
    with pytest.raises(InvalidRequest) as err:
        _plan(PlanRequest(ctx=131072, parallel=parallel))
    assert err.value.message() == (
        f"--parallel {parallel} is outside llama.cpp's range of 1 to 256 slots. "
        "Use --parallel 1 to 256."
    )
    assert err.value.exit_code == 2


def test_most_slots_llama_cpp_takes_still_plan() -> None:
    _plan(PlanRequest(ctx=MAX_PARALLEL * MIN_CTX, parallel=MAX_PARALLEL))


@pytest.mark.parametrize("ctx", [0, -5, MIN_CTX - 1])
def test_context_below_minimum_is_refused(ctx: int) -> None:
    with pytest.raises(InvalidRequest, match=f"context {ctx} is below the minimum of 512"):
        _plan(PlanRequest(ctx=ctx))


def test_context_above_int32_is_refused_even_when_trained_longer() -> None:
    """A header may claim a uint32 context; llama-server's -c stops at 2^31 - 1."""
    facts = _facts(ctx_train=2**32 - 1)
    with pytest.raises(InvalidRequest) as err:
        _plan(PlanRequest(ctx=2**31), facts)
    assert "2147483648 cells is above llama-server's limit of 2147483647" in err.value.message()


def test_context_above_trained_suggests_no_more_than_int32() -> None:
    with pytest.raises(InvalidRequest) as err:
        _plan(PlanRequest(ctx=2**40), _facts(ctx_train=2**32 - 1))
    assert f"Use --ctx {MAX_CTX} or less." in err.value.message()


def test_ollama_context_is_per_slot_so_the_total_is_bounded() -> None:
    facts = _facts(ctx_train=2**31)
    with pytest.raises(InvalidRequest, match="cells is above llama-server's limit"):
        _plan(PlanRequest(ctx=2**30, parallel=4, backend="ollama"), facts)


def test_slots_with_too_few_cells_are_refused_with_both_ways_out() -> None:
    """8192 cells over 32 slots: 256 a slot (padded), below the 512 a plan allows."""
    with pytest.raises(InvalidRequest) as err:
        _plan(PlanRequest(ctx=8192, parallel=32))
    assert err.value.message() == (
        "context 8192 shared by 32 slots leaves 256 cells a slot, below the minimum of 512. "
        "Use --ctx 16384 or more, or --parallel 16 or fewer."
    )


def test_slots_refusal_offers_only_what_the_model_allows() -> None:
    with pytest.raises(InvalidRequest) as err:
        _plan(PlanRequest(ctx=32768, parallel=256), _facts(ctx_train=32768))
    assert err.value.message().endswith("Use --parallel 64 or fewer.")


def test_every_slot_of_a_plan_that_fits_has_room() -> None:
    """llama.cpp's n_ctx_seq: pad(pad(ctx) / slots): at least the minimum, never zero."""
    for parallel in (1, 3, 16, 17, 31):
        req = PlanRequest(ctx=8192, parallel=parallel)
        result = make_plan("m", [_facts()], get_profile("cpu-x86-32c-128gb"), req)
        assert result.chosen.settings.cells_per_stream >= MIN_CTX
        assert result.chosen.memory.host.kv_cache_bytes > 0


def _cli(*args: str) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", "from deployer.cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    return proc.returncode, [ln for ln in proc.stderr.splitlines() if ln.strip()]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plan", "demo", "--parallel", "20000"], "--parallel 20000 is outside"),
        (["render", "demo", "--ctx", "0"], "context 0 is below the minimum"),
        (["deploy", "demo", "--dry-run", "--parallel", "300"], "--parallel 300 is outside"),
        (["deploy", "demo", "--dry-run", "--timeout", "nan"], "--timeout nan is not in"),
        (["deploy", "demo", "--dry-run", "--timeout", "-5"], "--timeout -5 is not in"),
    ],
    ids=["plan-parallel", "render-ctx", "deploy-parallel", "deploy-timeout-nan", "timeout-neg"],
)
def test_cli_refuses_impossible_numbers_in_one_line(args: list[str], expected: str) -> None:
    code, lines = _cli(*args, "--profile", "cpu-x86-2c-8gb")
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and expected in lines[0]
