"""The fit benchmark's pure parts: /proc status parsing, the cap bisection, the targets."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.core.units import GIB, MIB

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from fit_truth import (
    ROW_KEY,
    ResidentPeaks,
    TrialOutcome,
    bisect_cap,
    check_plan_as_cap,
    check_targets,
    judge_speed,
    judge_trial,
    merge_rows,
    parse_proc_status,
    resolution_for,
)

# A real /proc/PID/status of llama-server on the demo model (trimmed to the memory lines).
STATUS = """Name:\tllama-server
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t 1702148 kB
VmSize:\t 1636612 kB
VmLck:\t       0 kB
VmHWM:\t  350256 kB
VmRSS:\t  350256 kB
RssAnon:\t   94244 kB
RssFile:\t  256012 kB
RssShmem:\t       0 kB
VmSwap:\t       0 kB
Threads:\t7
"""


def test_status_fields_are_read_in_bytes() -> None:
    s = parse_proc_status(STATUS)
    assert (s.anon, s.file, s.shmem, s.hwm) == (
        94244 * 1024,
        256012 * 1024,
        0,
        350256 * 1024,
    )


@pytest.mark.parametrize(
    "text",
    ["", "RssAnon:\tlots kB\n", "RssAnon: 12 MB\n", "Name:\tx\nVmHWM:\n", "\x00garbage\n"],
)
def test_status_without_readable_fields_reads_as_zero(text: str) -> None:
    s = parse_proc_status(text)
    assert (s.anon, s.file, s.shmem, s.hwm) == (0, 0, 0, 0)


def test_a_kernel_thread_status_has_no_rss_lines() -> None:
    # Kernel threads (and a process that has just exited) print no Rss* lines.
    s = parse_proc_status("Name:\tkthreadd\nState:\tS (sleeping)\nThreads:\t1\n")
    assert s.hwm == 0 and s.anon == 0


def test_peaks_take_each_field_at_its_own_maximum() -> None:
    peaks = ResidentPeaks()
    peaks.add(parse_proc_status("RssAnon:\t 100 kB\nRssFile:\t 900 kB\nVmHWM:\t 1000 kB\n"))
    peaks.add(parse_proc_status("RssAnon:\t 400 kB\nRssFile:\t 200 kB\nVmHWM:\t 1000 kB\n"))
    assert (peaks.anon, peaks.file, peaks.hwm, peaks.samples) == (
        400 * 1024,
        900 * 1024,
        1024000,
        2,
    )


def _fake(threshold: int, calls: list[int]) -> Callable[[int], TrialOutcome]:
    def trial(cap: int) -> TrialOutcome:
        calls.append(cap)
        return TrialOutcome(cap >= threshold, "" if cap >= threshold else "oom")

    return trial


@pytest.mark.parametrize("threshold_mib", [101, 250, 333, 499, 500])
def test_bisection_finds_the_threshold_within_the_resolution(threshold_mib: int) -> None:
    calls: list[int] = []
    res = bisect_cap(
        100 * MIB, 500 * MIB, _fake(threshold_mib * MIB, calls), resolution_bytes=8 * MIB
    )
    assert res.cap_bytes is not None
    assert threshold_mib * MIB <= res.cap_bytes < threshold_mib * MIB + 8 * MIB
    assert calls[0] == 500 * MIB  # the high bound is confirmed first
    assert all(c % MIB == 0 for c in calls)
    assert len(calls) <= 1 + 6  # ceil(log2(400 / 8)) halvings
    assert [c for c, _ in res.trials] == calls


def test_a_failing_high_bound_is_grown_before_the_search() -> None:
    calls: list[int] = []
    res = bisect_cap(100 * MIB, 200 * MIB, _fake(300 * MIB, calls), resolution_bytes=8 * MIB)
    assert calls[:3] == [200 * MIB, 250 * MIB, 313 * MIB]
    assert res.cap_bytes is not None and 300 * MIB <= res.cap_bytes < 308 * MIB
    # The search continues above the failed bound, never below it.
    assert min(calls[3:]) > 250 * MIB


def test_no_cap_when_even_the_grown_bound_fails() -> None:
    calls: list[int] = []
    res = bisect_cap(
        1 * MIB, 10 * MIB, _fake(10 * GIB, calls), resolution_bytes=MIB, max_grow_steps=2
    )
    assert res.cap_bytes is None and len(calls) == 3
    assert res.as_dict()["cap_mib"] is None


@pytest.mark.parametrize(("lo", "hi", "step"), [(10, 10, 1), (10, 5, 1), (0, 10, 0), (-1, 10, 1)])
def test_bisection_refuses_a_meaningless_range(lo: int, hi: int, step: int) -> None:
    with pytest.raises(ValueError, match="low < high"):
        bisect_cap(lo, hi, lambda c: TrialOutcome(True, ""), resolution_bytes=step)


@pytest.mark.parametrize("threshold_mib", [1, 300, 910, 911, 912, 999, 1000])
def test_two_trials_decide_the_total_when_the_plan_is_inside(threshold_mib: int) -> None:
    # A plan of 1000 MiB is inside the target for any cap in (1000 / 1.10, 1000] = (910, 1000]:
    # two trials decide it; outside that, the cap is searched to say by how much it missed.
    calls: list[int] = []
    check = check_plan_as_cap(
        1000 * MIB, _fake(threshold_mib * MIB, calls), floor_bytes=100 * MIB, resolution_bytes=MIB
    )
    assert calls[0] == 1000 * MIB and check.below_bytes == 910 * MIB
    inside = 910 < threshold_mib <= 1000
    assert (check.cap_range is not None) == inside
    if inside:
        assert calls == [1000 * MIB, 910 * MIB] and check.search is None
        assert check.cap_range == (910 * MIB, 1000 * MIB)
    else:
        assert check.search is not None and check.search.cap_bytes is not None
        assert max(threshold_mib, 100) * MIB <= check.search.cap_bytes
        assert check.search.cap_bytes <= max(threshold_mib, 100) * MIB + MIB
        assert [c for c, _ in check.search.trials] == calls  # every trial kept, none repeated
    as_dict = check.as_dict()
    assert as_dict["plan_mib"] == 1000.0 and as_dict["at_plan"]["ok"] is True


@given(st.integers(min_value=64 * MIB, max_value=64 * GIB))
def test_the_two_trials_bracket_the_plan_itself(plan: int) -> None:
    # Caps are whole MiB: the plan's trial at or under the plan, the other at or over the plan
    # / 1.10, so a range from them decides the plan (never "undecided" by rounding).
    check = check_plan_as_cap(plan, _fake(0, []), floor_bytes=0, resolution_bytes=MIB)
    assert check.plan_bytes <= plan < check.plan_bytes + MIB
    assert check.below_bytes * 1.10 >= plan and check.below_bytes % MIB == 0
    verdict = check_targets(
        kv_logged=0, kv_est=0, weights_logged=1, weights_est=1, total_est=plan, cap_bytes=None,
        cap_range=(check.below_bytes, check.plan_bytes),
    )  # fmt: skip
    assert verdict.total_ok is True


def test_a_searched_cap_is_judged_on_both_ends_not_on_the_cap_found() -> None:
    # The plan / 1.10 passed, so the cap was searched below it: the cap found (the smallest that
    # passed) is only a bound from above; with the largest that failed, 1.10 x that is under
    # the plan and the row cannot be called inside (the demo's case: 340 failed, 347 passed).
    check = check_plan_as_cap(
        381 * MIB, _fake(341 * MIB, []), floor_bytes=100 * MIB, resolution_bytes=8 * MIB
    )
    assert check.search is not None and check.cap_range is None
    lo, hi = check.bounds
    assert hi is not None and lo < 341 * MIB <= hi and hi - lo <= 8 * MIB
    verdict = check_targets(
        kv_logged=0, kv_est=0, weights_logged=1, weights_est=1, total_est=381 * MIB,
        cap_bytes=check.search.cap_bytes, cap_range=check.bounds,
    )  # fmt: skip
    assert verdict.total_ok is not True


def test_a_plan_that_nothing_above_rescues_is_under() -> None:
    check = check_plan_as_cap(
        1000 * MIB, _fake(100 * GIB, []), floor_bytes=100 * MIB, resolution_bytes=8 * MIB
    )
    assert check.bounds[1] is None and check.bounds[0] > 1000 * MIB
    verdict = check_targets(
        kv_logged=0, kv_est=0, weights_logged=1, weights_est=1, total_est=1000 * MIB,
        cap_bytes=None, cap_range=check.bounds,
    )  # fmt: skip
    assert verdict.total_ok is False


def test_a_plan_under_the_cap_is_searched_upwards() -> None:
    calls: list[int] = []
    check = check_plan_as_cap(
        1000 * MIB, _fake(1100 * MIB, calls), floor_bytes=100 * MIB, resolution_bytes=8 * MIB
    )
    assert check.below is None and check.cap_range is None
    assert check.search is not None and check.search.cap_bytes is not None
    assert 1100 * MIB <= check.search.cap_bytes < 1108 * MIB
    assert min(calls) == 1000 * MIB  # nothing below the failed plan was tried


def test_a_cap_range_judges_the_total() -> None:
    common = {"kv_logged": 0, "kv_est": 0, "weights_logged": 1, "weights_est": 1}
    rng = (910 * MIB, 1000 * MIB)
    for total_mib, verdict in [(1000, True), (1001, True), (1030, None), (910, False),
                               (500, False), (950, None), (1101, False)]:  # fmt: skip
        check = check_targets(**common, total_est=total_mib * MIB, cap_bytes=None, cap_range=rng)
        assert check.total_ok is verdict, total_mib
        assert check.total_over_cap is None


def test_resolution_is_coarse_only_for_big_servers() -> None:
    assert resolution_for(8 * GIB) == 64 * MIB
    assert resolution_for(400 * MIB) == 8 * MIB


@pytest.mark.parametrize(
    ("tps", "ref", "reason"),
    [(9.0, 10.0, ""), (8.99, 10.0, "slow 0.90x"), (2.0, 10.0, "slow 0.20x"), (5.0, 0.0, "")],
)
def test_speed_floor(tps: float, ref: float, reason: str) -> None:
    assert judge_speed(tps, ref) == reason


def test_targets_inside() -> None:
    c = check_targets(
        kv_logged=512 * MIB,
        kv_est=512 * MIB + MIB,
        weights_logged=4000 * MIB,
        weights_est=4039 * MIB,
        total_est=5500 * MIB,
        cap_bytes=5000 * MIB,
    )
    assert c.kv_ok and c.weights_ok and c.total_ok and c.ok
    assert c.total_over_cap == pytest.approx(1.1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kv_est", 512 * MIB + MIB + 1),
        ("kv_est", 510 * MIB),
        ("weights_est", 4041 * MIB),
        ("weights_est", 3959 * MIB),
        ("total_est", 4999 * MIB),  # under the cap: an OOM or thrash waiting to happen
        ("total_est", 5501 * MIB),  # more than 10% over: refuses machines that would do
    ],
)
def test_targets_outside(field: str, value: int) -> None:
    kw: dict[str, int] = {
        "kv_logged": 512 * MIB,
        "kv_est": 512 * MIB,
        "weights_logged": 4000 * MIB,
        "weights_est": 4000 * MIB,
        "total_est": 5200 * MIB,
        "cap_bytes": 5000 * MIB,
    }
    kw[field] = value
    assert not check_targets(**kw, cap_range=None).ok


def test_without_a_cap_the_total_is_not_judged() -> None:
    c = check_targets(
        kv_logged=MIB,
        kv_est=MIB,
        weights_logged=GIB,
        weights_est=GIB,
        total_est=1,
        cap_bytes=None,
    )
    assert c.total_ok is None and c.total_over_cap is None and c.ok


@pytest.mark.parametrize(
    ("error", "speeds", "failcnt", "reason"),
    [
        ("killed (oom)", [10.0], 5, "killed (oom)"),
        ("", [], 0, "no completion"),
        ("", [2.0, 9.5], 100, ""),  # best of its answers counts
        ("", [2.0, 3.0], 100, "slow 0.30x"),  # pressed against the cap and slow: thrashing
        ("", [2.0], 0, ""),  # never reached its cap: the slowness is the machine's noise
    ],
)
def test_a_capped_run_is_judged_slow_only_when_the_cap_bit(
    error: str, speeds: list[float], failcnt: int, reason: str
) -> None:
    assert judge_trial(error, speeds, 10.0, failcnt) == reason


@pytest.mark.parametrize(
    ("reason", "marginal"),
    [("slow 0.89x", True), ("slow 0.70x", True), ("slow 0.69x", False), ("slow (no answer in 21 s)", False),
     ("killed (oom)", False), ("", False), ("slow x", False)],
)  # fmt: skip
def test_only_near_misses_on_speed_are_retried(reason: str, marginal: bool) -> None:
    from fit_truth import is_marginal

    assert is_marginal(reason) is marginal


def test_the_long_prompt_fits_one_slot() -> None:
    from fit_accuracy import DEMO_GRID, SHAPE_GRID, fill_tokens

    for s in DEMO_GRID + SHAPE_GRID:
        n = fill_tokens(s)
        assert 0 < n <= s.ctx // s.slots - 8  # llama-server refuses a prompt over the slot
        assert n == s.ub + 8 or n == s.ctx // s.slots - 8
        if not s.fa:  # the KQ matrix is touched in full only by a prompt that fills the slot
            assert n == s.ctx // s.slots - 8


def _held_after(turns: list[int], early: int, ubatch: int, keep: int = 3) -> list[int]:
    """The positions of the checkpoints a slot holds after a raw-token conversation, by
    llama-server 11434's rules (tools/server/server-context.cpp): each prompt checkpoints
    `early` (min(batch, ubatch + 4)) and 4 tokens before its end where it reaches past what
    the slot already holds, and where a later turn resumes (the previous turn's length) when
    the batch that starts there ends within a ubatch of the prompt's end; a full list keeps
    its first and drops the earlier turns' others, and a checkpoint at a position already held
    replaces it. A turn resumes where the last one ended (measured in 1024- and 2048-token
    slots; in shorter ones the server restored a checkpoint a few tokens back first, which
    this does not model)."""
    held: list[tuple[int, int]] = []  # (turn, position)
    done = 0
    for turn, n in enumerate(turns):
        breaks = [p for p in (n - early, n - 4) if p > done]
        starts = breaks
        if done > 0 and n - (breaks[0] if breaks else n) < ubatch:
            starts = [done, *breaks]
        for pos in starts:
            held = [h for h in held if h[1] != pos]
            if len(held) + 1 >= keep:
                held = held[:1] + [h for h in held[1:] if h[0] == turn]
            while len(held) >= keep:
                held.pop(0)
            held.append((turn, pos))
        done = n
    return [p for _, p in held]


@pytest.mark.parametrize("slot", [512, 1024, 1100, 2048, 4096, 8192])
@pytest.mark.parametrize("window", [512, 4096])
@pytest.mark.parametrize(("ubatch", "batch"), [(512, 2048), (2048, 2048), (256, 256)])
def test_the_conversation_holds_the_most_checkpoint_cells_raw_tokens_can(
    slot: int, window: int, ubatch: int, batch: int
) -> None:
    from fit_truth import conversation_turns

    early = min(batch, ubatch + 4)
    last = slot - 8
    turns = conversation_turns(slot, ubatch, window, batch)
    assert all(0 < n <= last for n in turns) and turns == sorted(turns)

    def cells(conversation: list[int]) -> int:
        return sum(min(p, window) for p in _held_after(conversation, early, ubatch))

    if last - 16 <= early:
        # a slot too short for a first turn past a ubatch: two turns, the second of one token
        # (in a 512-token slot the server held three checkpoints of 498-500 cells after them)
        assert turns == [last - 1, last]
        return
    # No other conversation of raw tokens ending the slot holds more: two turns (every first
    # length) or three (every first length, then a second ending 5 or 8 tokens short).
    others = [[p1, last] for p1 in range(8, last)]
    others += [[p1, last - k, last] for k in (5, 8) for p1 in range(8, last - k - 4)]
    best = max(cells(c) for c in others)
    assert cells(turns) == best
    if slot >= 2 * early + 24:  # room for a first turn past a ubatch: three
        assert len(_held_after(turns, early, ubatch)) == 3


def test_the_checkpoints_held_are_read_from_the_servers_lines() -> None:
    from fit_accuracy import checkpoints_held

    # Lines as llama-server 11434 prints them with -v (the erase lines differ in their fields).
    created = (
        "0.23.9 I slot create_check: id  {slot} | task 7 | created context checkpoint 2 of 3 "
        "(pos_min = {lo}, pos_max = {hi}, n_tokens = {n}, size = {mib} MiB)"
    )
    invalidated = (
        "0.31.0 I slot   operator(): id  {slot} | task 11 | erased invalidated context "
        "checkpoint (pos_min = {lo}, pos_max = {hi}, n_tokens = {n}, n_swa = 512, "
        "pos_next = 0, size = {mib} MiB)"
    )
    too_close = (
        "0.51.7 I slot create_check: id  {slot} | task 15 | erasing context checkpoint too "
        "close to an earlier one (pos_min = {lo}, pos_max = {hi}, n_tokens = {n}, size = {mib} MiB)"
    )
    old = (
        "0.52.0 W slot create_check: id  {slot} | task 15 | erasing old context checkpoint "
        "(pos_min = {lo}, pos_max = {hi}, n_tokens = {n}, size = {mib} MiB)"
    )
    a = {"lo": 0, "hi": 3, "n": 4, "mib": "0.087"}
    b = {"lo": 436, "hi": 1459, "n": 1460, "mib": "11.006"}
    c = {"lo": 1012, "hi": 2035, "n": 2036, "mib": "10.500"}
    log = "\n".join(
        [
            created.format(slot=0, **a),
            created.format(slot=1, **a),  # the same checkpoint in another slot
            invalidated.format(slot=0, **a),
            created.format(slot=0, **b),
            "unrelated line with size = 3 MiB",
            created.format(slot=1, **b),
            too_close.format(slot=1, **b),
            created.format(slot=0, **c),
            old.format(slot=0, **b),
            invalidated.format(slot=2, **c),  # never created there: nothing to drop
            created.format(slot=3, **c),
            # replaced by the one created next at the same n_tokens (no fields of its own)
            "0.60.1 I slot create_check: id  3 | task 19 | superseding context checkpoint at "
            "n_tokens = 2036",
            created.format(slot=3, **(c | {"mib": "10.600"})),
        ]
    )
    assert sorted(checkpoints_held(log)) == [0.087, 10.5, 10.6]


def test_memory_cgroup_reads_v1_and_v2_files_alike(tmp_path: Path) -> None:
    """A capped start is judged the same on a v1 host (CI) and a v2 one (a GPU VM): the hits
    against the cap, the peak and the OOM kills come from each version's own files."""
    from _llama import MemoryCgroup

    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.failcnt").write_text("17\n")
    (v1 / "memory.max_usage_in_bytes").write_text(f"{300 * MIB}\n")
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    (v1 / "memory.stat").write_text("rss 1000\nmapped_file 2000\n")
    v2 = tmp_path / "v2"
    v2.mkdir()
    events = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 1\noom_group_kill 0\n"
    (v2 / "memory.events").write_text(events)
    (v2 / "memory.peak").write_text(f"{300 * MIB}\n")
    (v2 / "memory.stat").write_text("anon 1000\nfile_mapped 2000\n")
    for cg in (MemoryCgroup(v1, v2=False), MemoryCgroup(v2, v2=True)):
        assert (cg.failcnt(), cg.max_usage(), cg.oom_kills()) == (17, 300 * MIB, 1)
        assert sum(cg.stat().values()) == 3000
    empty = MemoryCgroup(tmp_path / "gone", v2=True)  # a group already removed reads as zeros
    assert (empty.failcnt(), empty.max_usage(), empty.oom_kills(), empty.stat()) == (0, 0, 0, {})


def test_memory_cgroup_create_caps_a_v1_or_v2_group_and_cleans_up_a_failed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """create() picks v1 where its memory hierarchy is mounted, else v2, enabling the memory
    controller for the root's children; a group it made but could not cap is removed."""
    import _llama
    from _llama import MemoryCgroup

    v1_root, v2_root = tmp_path / "memory", tmp_path / "unified"
    v1_root.mkdir()
    v2_root.mkdir()
    (v2_root / "cgroup.subtree_control").write_text("cpu io\n")
    monkeypatch.setattr(_llama, "CGROUP_V1_MEMORY", v1_root)
    monkeypatch.setattr(_llama, "CGROUP_V2_ROOT", v2_root)

    cg = MemoryCgroup.create("g2", 300 * MIB)  # no v1 cgroup.procs: the unified hierarchy
    assert cg.v2 and cg.path == v2_root / "g2"
    assert (v2_root / "cgroup.subtree_control").read_text() == "+memory"
    assert (cg.path / "memory.max").read_text() == str(300 * MIB)

    (v1_root / "cgroup.procs").write_text("")
    cg = MemoryCgroup.create("g1", 200 * MIB)
    assert not cg.v2 and (cg.path / "memory.limit_in_bytes").read_text() == str(200 * MIB)

    real_write = Path.write_text

    def refuse_limits(self: Path, data: str, *args: object, **kwargs: object) -> int:
        if self.name == "memory.limit_in_bytes":
            raise OSError(22, "Invalid argument")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_text", refuse_limits)
    with pytest.raises(OSError):
        MemoryCgroup.create("g3", 1)
    assert not (v1_root / "g3").exists()


def test_no_usable_memory_cgroup_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither hierarchy mounted (or one that refuses a group): cgroup_available() says so, and
    the benchmarks print their one line instead of failing at the first capped start."""
    import _llama

    monkeypatch.setattr(_llama, "CGROUP_V1_MEMORY", tmp_path / "no-v1")
    monkeypatch.setattr(_llama, "CGROUP_V2_ROOT", tmp_path / "no-v2")
    assert _llama.cgroup_available() is False
    # a v2 root whose controller file cannot be read or written (a namespaced mount)
    (tmp_path / "no-v2" / "cgroup.subtree_control").mkdir(parents=True)
    assert _llama.cgroup_available() is False
    assert [p.name for p in (tmp_path / "no-v2").iterdir()] == ["cgroup.subtree_control"]


def test_no_two_sampled_requests_share_a_seed() -> None:
    """A repeated seed replays the last answer's tokens: a routed MoE would touch the same
    experts again and its cold experts would never be read back under a cap."""
    from _llama import sampled_request

    seeds = [sampled_request()["seed"] for _ in range(50)]
    assert len(set(seeds)) == len(seeds)
    assert all(sampled_request()["temperature"] > 0 for _ in range(3))


def _row(model: str, ctx: int, **kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(model=model, ctx=ctx, slots=1, kv_type="f16",
                                   flash_attention=True, ubatch=512, mmap=True)  # fmt: skip
    return base | kw


def test_merged_rows_replace_their_settings_and_keep_the_old_ones_with_the_reason() -> None:
    rows = [_row("a", 4096, v=1), _row("b", 4096, v=1)]
    doc: dict[str, object] = {"rows": rows, "summary": None}
    new = [_row("b", 4096, v=2), _row("c", 8192, v=2)]
    out = merge_rows(doc, new, "the conversation was too short")
    assert [(r["model"], r["v"]) for r in out["rows"]] == [("a", 1), ("b", 2), ("c", 2)]
    assert out["superseded_rows"] == [
        _row("b", 4096, v=1, superseded_because="the conversation was too short")
    ]
    assert rows[1]["v"] == 1 and "superseded_rows" not in doc  # the input is untouched


def test_a_merge_keeps_the_superseded_rows_an_older_file_holds_as_why_and_rows() -> None:
    """Older results files keep superseded_rows as {"why": ..., "rows": [...]}: a merge keeps
    every row of it (a row without a reason of its own takes `why`); it had made a list of the
    mapping's two keys, dropping 35 rows."""
    kept = [_row("a", 2048, superseded_because="own reason"), _row("a", 1024)]
    doc = {"rows": [_row("a", 4096)], "superseded_rows": {"why": "shared", "rows": kept}}
    out = merge_rows(doc, [_row("a", 4096, v=2)], "rerun")
    assert out["superseded_rows"] == [
        _row("a", 2048, superseded_because="own reason"),
        _row("a", 1024, superseded_because="shared"),
        _row("a", 4096, superseded_because="rerun"),
    ]
    for bad in ({"why": "x"}, "rows", [1], {"why": "x", "rows": "y"}):
        with pytest.raises(ValueError, match="superseded_rows"):
            merge_rows(doc | {"superseded_rows": bad}, [_row("b", 4096)], None)


def test_a_merge_never_replaces_a_row_silently() -> None:
    doc = {"rows": [_row("a", 4096)]}
    with pytest.raises(ValueError, match="already measured"):
        merge_rows(doc, [_row("a", 4096)], None)
    # a different setting of the same model, or the same one with reads throttled, is new
    out = merge_rows(doc, [_row("a", 4096, mmap=False), _row("a", 4096, serve_read_bps=1)], None)
    assert len(out["rows"]) == 3 and "superseded_rows" not in out
    with pytest.raises(ValueError, match="twice"):
        merge_rows(doc, [_row("z", 1), _row("z", 1)], "x")


def test_a_file_merge_records_each_rows_copy_and_refuses_other_runs(tmp_path: Path) -> None:
    from fit_accuracy import merge_files

    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    real = json.loads((results / "fit_accuracy_held_out_archs.json").read_text())
    rows = [{k: v for k, v in r.items() if k != "model_file"} for r in real["rows"]]
    run = {k: real[k] for k in ("llama_prefix", "threads", "read_ahead_kb")}
    into, new = tmp_path / "a.json", tmp_path / "b.json"
    into.write_text(json.dumps(run | {"models": {"m": "old.gguf"} | real["models"],
                                      "rows": rows[:3]}))  # fmt: skip
    new.write_text(json.dumps(run | {"models": {"m": "new.gguf"}, "rows": rows[3:]}))
    with pytest.raises(ValueError, match="itself"):
        merge_files(into, into, None)
    summary = merge_files(new, into, None)
    merged = json.loads(into.read_text())
    assert summary == merged["summary"] and summary["settings"] == len(rows)
    assert summary["targets_met"] is (summary["settings_off_target"] == 0)
    assert [r["model_file"] for r in merged["rows"][:3]] == [
        real["models"][r["model"]] for r in rows[:3]
    ]
    assert merged["models"]["m"] == "new.gguf"  # the newer run names the copy now
    other = tmp_path / "c.json"
    other.write_text(json.dumps(run | {"read_ahead_kb": 8192, "rows": rows[:1]}))
    with pytest.raises(ValueError, match="read_ahead_kb"):
        merge_files(other, into, "a rerun")


@pytest.mark.parametrize(
    "text", ['{"rows": "x"}', '{"rows": [1]}', "[]", "{", '{"rows": [{"model": "a"}]}', "\u0000"]
)
def test_a_merge_of_a_hostile_file_is_one_line_and_leaves_the_target_alone(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import fit_accuracy

    into, bad = tmp_path / "into.json", tmp_path / "bad.json"
    into.write_text('{"rows": []}')
    bad.write_text(text)
    argv = ["fit_accuracy.py", "--merge", str(bad), "--into", str(into), "--why", "x\n{{ y }}"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", argv)
        assert fit_accuracy.main() == 2
    err = capsys.readouterr().err
    assert err.startswith("Cannot merge ") and err.count("\n") == 1
    assert into.read_text() == '{"rows": []}'


def test_a_results_file_is_written_whole_or_left_as_it_was(tmp_path: Path) -> None:
    """write_doc (a run's rows, a merge, a rescore): a document that cannot be written leaves
    the file as it was and no temporary file beside it; one that can replaces it whole."""
    from fit_accuracy import write_doc

    out = tmp_path / "r.json"
    out.write_text('{"rows": [1]}')
    real_write = Path.write_text

    def disk_full(self: Path, text: str) -> int:  # half the text lands, then the disk is full
        real_write(self, text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "write_text", disk_full)
        with pytest.raises(OSError):
            write_doc(out, {"rows": [2, 3, 4]})
    assert out.read_text() == '{"rows": [1]}'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    write_doc(out, {"rows": [2]})
    assert json.loads(out.read_text()) == {"rows": [2]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_merge_keeps_what_is_still_not_judged_and_drops_what_a_row_now_judges(
    tmp_path: Path,
) -> None:
    from fit_accuracy import merge_files

    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    real = json.loads((results / "fit_accuracy_held_out_archs.json").read_text())
    run = {k: real[k] for k in ("llama_prefix", "threads", "read_ahead_kb")}
    row = real["rows"][0]
    key = {k: row[k] for k in ROW_KEY}
    other = key | {"ctx": 123456}
    into, new = tmp_path / "a.json", tmp_path / "b.json"
    into.write_text(json.dumps(run | {"rows": real["rows"][1:2],
                                      "not_judged": [key | {"reason": "too slow"}]}))  # fmt: skip
    new.write_text(json.dumps(run | {"rows": [row], "not_judged": [other | {"reason": "x"}]}))
    summary = merge_files(new, into, None)
    merged = json.loads(into.read_text())
    assert merged["not_judged"] == [other | {"reason": "x"}]  # the judged one is gone
    # a setting still not judged leaves the targets unmet, as it does a run's
    assert summary["settings_not_judged"] == 1 and summary["targets_met"] is False
