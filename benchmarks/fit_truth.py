"""Pure parts of the fit benchmark: /proc status parsing, the cap search, the targets.

No processes, no files: `_llama.py` runs the server and feeds these functions what it read, so
the unit tests (tests/unit/test_fit_bench.py) can drive them with recorded text and fake trials.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deployer.core.units import GIB, MIB

# What the compute-buffer coefficients were fitted on (see docs/fit.md); every other model is
# judged out of sample.
IN_SAMPLE_MODELS = frozenset({"demo"})

# A capped server must decode at least this fraction of its uncapped speed to pass.
SPEED_FLOOR = 0.90
KV_TOLERANCE_BYTES = 1 * MIB
WEIGHTS_TOLERANCE = 0.01
TOTAL_CEILING = 1.10

_STATUS_LINE = re.compile(r"^(?P<key>[A-Za-z]+):\s+(?P<kib>\d+)\s+kB\s*$")
_STATUS_KEYS = {"RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem", "VmHWM": "hwm"}


@dataclass
class ResidentSample:
    """One reading of /proc/PID/status, in bytes (0 for a field the kernel did not print)."""

    anon: int = 0
    file: int = 0
    shmem: int = 0
    hwm: int = 0


def parse_proc_status(text: str) -> ResidentSample:
    """The resident-memory fields of a /proc/PID/status text (kB in the file, bytes here)."""
    sample = ResidentSample()
    for line in text.splitlines():
        m = _STATUS_LINE.match(line)
        if m is None or m["key"] not in _STATUS_KEYS:
            continue
        setattr(sample, _STATUS_KEYS[m["key"]], int(m["kib"]) * 1024)
    return sample


@dataclass
class ResidentPeaks:
    """The largest value of each field over a run (each field peaks on its own)."""

    anon: int = 0
    file: int = 0
    shmem: int = 0
    hwm: int = 0
    samples: int = 0

    def add(self, s: ResidentSample) -> None:
        """Fold one sample in."""
        self.anon = max(self.anon, s.anon)
        self.file = max(self.file, s.file)
        self.shmem = max(self.shmem, s.shmem)
        self.hwm = max(self.hwm, s.hwm)
        self.samples += 1


@dataclass
class TrialOutcome:
    """What one server start under one cap (or none) came to."""

    ok: bool  # loaded, answered, and (when judged against a reference) fast enough
    reason: str  # "" when ok; else "oom", "load failed", "timeout", "slow 0.62x", ...
    tokens_per_s: float = 0.0
    cgroup_max_usage_bytes: int = 0
    cgroup_failcnt: int = 0
    cgroup_failcnt_serving: int = 0  # of those, after the server said it was ready


@dataclass
class CapSearch:
    """The smallest passing cap found, and every trial that led to it."""

    cap_bytes: int | None  # None: even the high bound failed
    low_bytes: int
    high_bytes: int
    resolution_bytes: int
    trials: list[tuple[int, TrialOutcome]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (caps in MiB)."""
        return {
            "cap_mib": None if self.cap_bytes is None else round(self.cap_bytes / MIB, 1),
            "low_mib": round(self.low_bytes / MIB, 1),
            "high_mib": round(self.high_bytes / MIB, 1),
            "resolution_mib": round(self.resolution_bytes / MIB, 1),
            "trials": [trial_dict(cap, t) for cap, t in self.trials],
        }


def conversation_turns(slot_ctx: int, ubatch: int, window: int, batch: int = 2048) -> list[int]:
    """Prompt lengths, in tokens, of a conversation in one slot that leaves llama-server
    holding as much context-checkpoint memory as completions of raw tokens can (a
    sliding-window or recurrent model; --ctx-checkpoints 3, as deployer renders it).

    llama-server (11434) checkpoints a prompt min(batch, ubatch + 4) and 4 tokens before its
    end, where the prompt reaches, and where a turn resumes near its end (a batch that starts
    within a ubatch of the prompt's end: the previous turn's length); a checkpoint at position
    p holds min(p, window) cells. When a later turn fills the list, it keeps the conversation's
    first checkpoint and drops the earlier turns' others. So the most a conversation can hold:
    the first turn's earliest checkpoint as late as it can be, then a last turn of 5 tokens
    that ends the slot, whose checkpoints sit 5 and 4 tokens before its end; the first turn
    ends there too, or is a ubatch and 4 tokens long, whichever keeps more (measured with the
    demo in a 1024-token slot: turns 1011, 1016 held checkpoints at 495, 1011 and 1012; 516,
    1011, 1016 held 512, 1011 and 1012; the earlier two turns, 492 and 1016, held 488, 500
    and 1012). Where every checkpoint reaches the window either way, two turns (the second
    longer than a ubatch) as before; in a slot too short for a first turn past a ubatch, two
    turns, the second of one token. The last prompt ends 8
    tokens short of the slot (the server refuses a prompt that fills it). A chat request
    checkpoints the last user message's start too and can hold three near the slot's end: the
    plan's bound is that, and raw tokens fall short of it only where the first turn's checkpoint
    cannot reach the window (a slot within a window and a ubatch)."""
    last = slot_ctx - 8
    early = min(batch, ubatch + 4)

    def first_kept(p1: int) -> int:  # where the first turn's earliest checkpoint sits
        return p1 - early if p1 > early else p1 - 4

    def cells(positions: list[int]) -> int:
        return sum(min(max(p, 0), window) for p in positions)

    options: list[tuple[int, list[int]]] = []
    longest_first = last - early - 8  # the second turn's early checkpoint must be new
    for p1 in dict.fromkeys((longest_first, min(longest_first, early))):  # in this order
        if p1 >= 8:
            options.append((cells([first_kept(p1), last - early, last - 4]), [p1, last]))
    # Three turns where the first can take both its checkpoints; in a shorter slot the server
    # restores a checkpoint at each turn and the positions shift (measured in 512-token slots:
    # turns 503, 504 held 499, 498, 500; 488, 496, 504 held less), so two turns there.
    if last - 16 > early:
        options.append((cells([first_kept(last - 5), last - 5, last - 4]), [last - 5, last]))
        options.append((cells([early - 4, last - 5, last - 4]), [early, last - 5, last]))
    if last >= 9:
        options.append((cells([first_kept(last - 1), last - 1]), [last - 1, last]))
    if not options:
        return [max(1, last)]
    # the first of the best: two turns where three hold no more
    return max(options, key=lambda o: o[0])[1]


def resolution_for(high_bytes: int) -> int:
    """Search resolution: 64 MiB for multi-GiB servers, 8 MiB for small ones."""
    return 64 * MIB if high_bytes >= 2 * GIB else 8 * MIB


def judge_speed(tokens_per_s: float, reference_tokens_per_s: float) -> str:
    """'' when the speed is within the floor of the reference, else why it fails."""
    if reference_tokens_per_s <= 0:
        return ""
    ratio = tokens_per_s / reference_tokens_per_s
    return "" if ratio >= SPEED_FLOOR else f"slow {ratio:.2f}x"


# A capped run that answered, but between this and the floor of full speed, is retried once:
# on a busy 2-core machine single answers swing by 10-15%, while a thrashing server is many
# times slower or does not answer at all.
MARGINAL_FLOOR = 0.7


def is_marginal(reason: str) -> bool:
    """Whether a failed trial's `reason` is a near miss on speed worth one more run."""
    if not reason.startswith("slow ") or not reason.endswith("x"):
        return False
    try:
        return float(reason[5:-1]) >= MARGINAL_FLOOR
    except ValueError:
        return False


def judge_trial(
    error: str, tokens_per_s: list[float], reference_tokens_per_s: float, failcnt_serving: int
) -> str:
    """'' when a capped run passes, else why not.

    `failcnt_serving` counts the times the group hit its cap after the server said it was ready
    (hits while loading are the file streaming through the page cache, harmless). A run that
    never hit its cap while serving cannot have been slowed by it: a slow decode there is the
    machine's noise, not thrashing, and passes. Only a run pressed against its cap has to decode
    within the floor of the uncapped speed (best of its completions).
    """
    if error:
        return error
    if not tokens_per_s:
        return "no completion"
    if failcnt_serving == 0:
        return ""
    return judge_speed(max(tokens_per_s), reference_tokens_per_s)


def bisect_cap(
    low_bytes: int,
    high_bytes: int,
    trial: Callable[[int], TrialOutcome],
    *,
    resolution_bytes: int,
    grow: float = 1.25,
    max_grow_steps: int = 3,
    high_passed: TrialOutcome | None = None,
) -> CapSearch:
    """Smallest cap in (low, high] that passes `trial`, to within `resolution_bytes`.

    `low_bytes` is taken to fail without trying it (the caller picks a cap the server cannot
    live under, such as its anonymous peak); `high_bytes` is tried first, and grown by `grow`
    up to `max_grow_steps` times when it fails, unless `high_passed` is a passing outcome the
    caller already has for it. Caps are whole MiB. Assumes a larger cap never fails where a
    smaller one passed; noise that breaks this only moves the answer up.
    """
    if resolution_bytes <= 0 or low_bytes < 0 or high_bytes <= low_bytes:
        raise ValueError("need 0 <= low < high and a positive resolution")
    res = CapSearch(None, low_bytes, high_bytes, resolution_bytes)

    def run(cap: int) -> bool:
        outcome = trial(cap)
        res.trials.append((cap, outcome))
        return outcome.ok

    hi = _whole_mib(high_bytes)
    if high_passed is not None and high_passed.ok:
        res.trials.append((hi, high_passed))
    else:
        for _ in range(max_grow_steps + 1):
            if run(hi):
                break
            low_bytes, hi = hi, _whole_mib(int(hi * grow))
        else:
            return res
    lo = low_bytes
    while hi - lo > resolution_bytes:
        mid = _whole_mib((lo + hi) // 2)
        if mid <= lo or mid >= hi:
            break
        if run(mid):
            hi = mid
        else:
            lo = mid
    res.cap_bytes = hi
    return res


def _whole_mib(n: int) -> int:
    return -(-n // MIB) * MIB


def trial_dict(cap: int, t: TrialOutcome) -> dict[str, Any]:
    """One capped start's JSON form (caps in MiB)."""
    return {
        "cap_mib": round(cap / MIB, 1),
        "ok": t.ok,
        "reason": t.reason,
        "tokens_per_s": round(t.tokens_per_s, 2),
        "cgroup_max_usage_mib": round(t.cgroup_max_usage_bytes / MIB, 1),
        "cgroup_failcnt": t.cgroup_failcnt,
        "cgroup_failcnt_serving": t.cgroup_failcnt_serving,
    }


def bounds_of_trials(trials: list[tuple[float, bool]]) -> tuple[Any, Any]:
    """(lo, hi] from (cap, passed) pairs: the largest cap that failed below the smallest that
    passed (0 if none), and that smallest passing cap (None if none passed)."""
    passed = [c for c, ok in trials if ok]
    hi = min(passed) if passed else None
    failed = [c for c, ok in trials if not ok and (hi is None or c < hi)]
    return (max(failed) if failed else 0, hi)


@dataclass
class PlanCapCheck:
    """The host-total target decided by trials at the plan's own figure, without measuring the
    cap: the plan as a cap must pass (so cap <= plan) and the plan / 1.10 must fail (so
    plan < 1.10 x cap). Only when a trial contradicts the target is the cap searched
    (`search`), to say by how much it was missed."""

    plan_bytes: int  # the plan's host total, whole MiB rounded down
    below_bytes: int  # the plan / TOTAL_CEILING, whole MiB rounded up
    at_plan: TrialOutcome
    below: TrialOutcome | None  # None: not tried (the plan itself failed)
    search: CapSearch | None

    @property
    def cap_range(self) -> tuple[int, int] | None:
        """(lo, hi] holding the cap when both trials held: (plan / 1.10, plan]."""
        if self.search is None and self.at_plan.ok and self.below is not None:
            return (self.below_bytes, self.plan_bytes)
        return None

    @property
    def bounds(self) -> tuple[int, int | None]:
        """(lo, hi]: the largest cap that failed (0 if none) and the smallest that passed (None
        if none did) over every trial, searched or not. A searched cap is only its bound from
        above: the row is judged on both ends, never on the found cap alone."""
        trials = [(self.plan_bytes, self.at_plan)]
        if self.below is not None:
            trials.append((self.below_bytes, self.below))
        if self.search is not None:
            trials += self.search.trials
        return bounds_of_trials([(c, t.ok) for c, t in trials])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (caps in MiB)."""

        rng = self.cap_range
        below = None if self.below is None else trial_dict(self.below_bytes, self.below)
        return {
            "plan_mib": round(self.plan_bytes / MIB, 1),
            "at_plan": trial_dict(self.plan_bytes, self.at_plan),
            "below": below,
            "cap_range_mib": None if rng is None else [round(x / MIB, 1) for x in rng],
            "bounds_mib": [None if x is None else round(x / MIB, 1) for x in self.bounds],
            "search": None if self.search is None else self.search.as_dict(),
        }


def check_plan_as_cap(
    plan_bytes: int,
    trial: Callable[[int], TrialOutcome],
    *,
    floor_bytes: int,
    resolution_bytes: int,
) -> PlanCapCheck:
    """Try the plan as a cap, then the plan / 1.10; search the cap only where one of them
    contradicts the target (the plan failing: the cap is above it; the plan / 1.10 passing: the
    cap is below that, down to `floor_bytes`). Two trials a setting instead of a bisection's
    six to eight, so every setting of every shape can be judged."""
    # Rounded so that the range decides the plan itself: the plan's trial at or under the plan,
    # the other at or over the plan / 1.10.
    plan = plan_bytes // MIB * MIB
    below = _whole_mib(math.ceil(plan_bytes / TOTAL_CEILING))
    at_plan = trial(plan)  # (the caller's trial repeats a near miss on speed once)
    if not at_plan.ok:
        search = bisect_cap(plan, int(plan * 1.25), trial, resolution_bytes=resolution_bytes)
        search.trials.insert(0, (plan, at_plan))
        return PlanCapCheck(plan, below, at_plan, None, search)
    below_out = trial(below)
    if below_out.ok and below > floor_bytes:
        search = bisect_cap(
            floor_bytes,
            below,
            trial,
            resolution_bytes=resolution_bytes,
            high_passed=below_out,
        )
        search.trials.insert(0, (plan, at_plan))
        return PlanCapCheck(plan, below, at_plan, below_out, search)
    if below_out.ok:  # passed at the floor itself: the cap is at most the floor
        search = CapSearch(below, floor_bytes, below, resolution_bytes)
        search.trials = [(plan, at_plan), (below, below_out)]
        return PlanCapCheck(plan, below, at_plan, below_out, search)
    return PlanCapCheck(plan, below, at_plan, below_out, None)


@dataclass
class TargetCheck:
    """Each target's verdict for one setting (None: not measured)."""

    kv_ok: bool
    weights_ok: bool
    total_ok: bool | None
    total_over_cap: float | None

    @property
    def ok(self) -> bool:
        """All measured targets met."""
        return self.kv_ok and self.weights_ok and self.total_ok is not False


def check_targets(
    *,
    kv_logged: int,
    kv_est: int,
    weights_logged: int,
    weights_est: int,
    total_est: int,
    cap_bytes: int | None,
    cap_range: tuple[int, int | None] | None = None,
) -> TargetCheck:
    """KV within 1 MiB of the log; weights within 1%; host total in [cap, 1.10 x cap].

    `cap_range` (lo, hi] (the largest cap that failed, the smallest that passed; hi None when
    none passed) decides the total when given, in place of `cap_bytes`: at least hi and at most
    1.10 x lo is inside whatever the cap is; at most lo is under it, over 1.10 x hi is over it;
    between, undecided (None)."""
    kv_ok = abs(kv_est - kv_logged) <= KV_TOLERANCE_BYTES
    weights_ok = abs(weights_est - weights_logged) <= WEIGHTS_TOLERANCE * max(weights_logged, 1)
    if cap_range is not None:
        lo, hi = cap_range  # hi None: nothing passed, the cap is above lo
        if hi is not None and hi <= total_est <= TOTAL_CEILING * lo:
            return TargetCheck(kv_ok, weights_ok, True, None)
        if total_est <= lo or (hi is not None and total_est > TOTAL_CEILING * hi):
            return TargetCheck(kv_ok, weights_ok, False, None)
        return TargetCheck(kv_ok, weights_ok, None, None)
    if cap_bytes is None or cap_bytes <= 0:
        return TargetCheck(kv_ok, weights_ok, None, None)
    ratio = total_est / cap_bytes
    return TargetCheck(kv_ok, weights_ok, 1.0 <= ratio <= TOTAL_CEILING, ratio)


# What makes two result rows the same measurement: the model and every setting the server ran
# with (a throttled run is its own row).
ROW_KEY = ("model", "ctx", "slots", "kv_type", "flash_attention", "ubatch", "mmap")


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (*(row.get(k) for k in ROW_KEY), row.get("serve_read_bps"))


def superseded_list(value: Any) -> list[dict[str, Any]]:
    """A results file's `superseded_rows` as a list of rows, each with its
    `superseded_because`. Older files keep them as `{"why": text, "rows": [...]}` (a row
    without its own reason takes `why`); anything else is a ValueError, never a list made
    of a mapping's keys."""
    if value is None:
        return []
    if (
        isinstance(value, dict)
        and set(value) == {"why", "rows"}
        and isinstance(value["rows"], list)
    ):
        why, rows = value["why"], value["rows"]
    elif isinstance(value, list):
        why, rows = None, value
    else:
        raise ValueError("superseded_rows is neither a list of rows nor {why, rows}")
    if not all(isinstance(r, dict) for r in rows):
        raise ValueError("superseded_rows holds something that is not a row")
    return [r if "superseded_because" in r or why is None else r | {"superseded_because": why}
            for r in rows]  # fmt: skip


def merge_rows(
    doc: dict[str, Any], new_rows: list[dict[str, Any]], why: str | None
) -> dict[str, Any]:
    """`doc` (a results file) with `new_rows` added. A new row measuring a setting `doc`
    already has replaces that row, which moves to `superseded_rows` with `why` as its
    `superseded_because`; without a reason such a collision is a ValueError (nothing is
    replaced silently). Rows keep their order; a replacement takes the old row's place."""
    keys = [row_key(r) for r in new_rows]
    if len(set(keys)) != len(keys):
        raise ValueError("the new rows measure one setting twice")
    incoming = dict(zip(keys, new_rows, strict=True))
    rows: list[dict[str, Any]] = []
    superseded = superseded_list(doc.get("superseded_rows"))
    for old in doc["rows"]:
        new = incoming.pop(row_key(old), None)
        if new is None:
            rows.append(old)
            continue
        if not why:
            raise ValueError(
                f"{old['model']} at ctx {old['ctx']} x {old['slots']} is already measured; "
                "give --why to supersede it"
            )
        superseded.append(old | {"superseded_because": why})
        rows.append(new)
    rows.extend(r for r in new_rows if row_key(r) in incoming)
    out = doc | {"rows": rows}
    if superseded:
        out["superseded_rows"] = superseded
    return out
