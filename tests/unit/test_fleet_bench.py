"""`deployer fleet bench`'s pure parts: each host's SSH route read from hostile inventory values,
the `ssh` argument lists built from it (strict host key checking always on, the address always
after `--`), and the use case over an in-memory link: one row per host, failures alone, every
tunnel closed whatever happens, the total the sum of the hosts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.core.bench.policy import LatencyTarget
from deployer.core.bench.samples import RequestSample
from deployer.core.bench.shapes import RequestShape
from deployer.core.bench.sweep import LevelRun
from deployer.core.errors import DeployerError, TunnelFailed
from deployer.core.fleet.hosts import HostPlan
from deployer.core.fleet.inventory import FleetHost
from deployer.core.fleet.routes import (
    COMMON_OPTIONS,
    SshRoute,
    read_file_argv,
    route_from_vars,
    routes_from_inventory,
    tunnel_argv,
)
from deployer.core.fleet_bench.capacity import HostBench, fleet_total
from deployer.core.fleet_bench.flow import FleetBenchOptions, ServerFacts, bench_fleet
from deployer.core.untrusted import CONTROL_RE
from tests.unit.in_memory import MemoryClock

# --- routes and argv --------------------------------------------------------------------------


def test_tunnel_argv_forwards_loopback_to_loopback_with_the_hosts_ssh_settings() -> None:
    route = SshRoute(host="web1", address="10.0.0.5", port=2222, user="deploy",
                     key_file="~/.ssh/fleet", known_hosts=("/etc/deployer/known_hosts",))  # fmt: skip
    argv = tunnel_argv(route, 40001, 8080)
    fixed = [w for opt in COMMON_OPTIONS for w in ("-o", opt)]
    assert argv == [
        "ssh", *fixed, "-o", "UserKnownHostsFile=/etc/deployer/known_hosts",
        "-p", "2222", "-l", "deploy", "-i", "~/.ssh/fleet",
        "-N", "-L", "127.0.0.1:40001:127.0.0.1:8080", "-o", "ExitOnForwardFailure=yes",
        "--", "10.0.0.5",
    ]  # fmt: skip
    assert "BatchMode=yes" in argv and "StrictHostKeyChecking=yes" in argv


def test_settings_the_inventory_leaves_out_are_left_to_ssh_as_ansible_does() -> None:
    route = route_from_vars("web1", {"ansible_connection": "ssh"})
    assert route == SshRoute(host="web1", address="web1")
    argv = tunnel_argv(route, 40001, 8080)
    assert "-p" not in argv and "-l" not in argv and "-i" not in argv
    assert argv[-2:] == ["--", "web1"]


def test_the_inventory_cannot_turn_host_key_checking_off() -> None:
    hv = {"ansible_host": "10.0.0.5", "ansible_user": "root", "ansible_port": "22",
          "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
          "ansible_ssh_extra_args": "-oProxyCommand='nc %h %p' -o 'UserKnownHostsFile ~/.ssh/kh'",
          "ansible_host_key_checking": False}  # fmt: skip
    route = route_from_vars("web1", hv)
    assert route.known_hosts == ("/dev/null", "~/.ssh/kh") and route.port == 22
    argv = tunnel_argv(route, 40001, 8080)
    assert not any("StrictHostKeyChecking=no" in w or "ProxyCommand" in w for w in argv)
    assert argv.count("StrictHostKeyChecking=yes") == 1


def test_aliases_and_local_connections() -> None:
    old = route_from_vars("h", {"ansible_ssh_host": "::1", "ansible_ssh_port": 2200,
                                "ansible_ssh_user": "u", "ansible_private_key_file": "/k"})  # fmt: skip
    assert (old.address, old.port, old.user, old.key_file) == ("::1", 2200, "u", "/k")
    local = route_from_vars("h", {"ansible_connection": "local", "ansible_host": "-oX"})
    assert local.local and local.describe() == "local"


HOSTILE: dict[str, list[Any]] = {
    "ansible_host": ["-oProxyCommand=touch /tmp/x", "a b", "a;b", "x\ny", "a/b", "h@x", "-h",
                     "{{ lookup('pipe','id') }}", "", "a" * 300, "[::1]", "a..b"],
    "ansible_user": ["-oProxyCommand=x", "root;id", "a b", "", "u\n", ".x", "a" * 40, True],
    "ansible_port": ["22; rm -rf /", 0, 70000, -1, "0x16", True, 10**30, "", [22]],
    "ansible_ssh_private_key_file": ["a b", "%d/key", "-oProxyCommand=x", "k'ey", "~user/k",
                                     "x\ny", "", "a" * 2000],
    "ansible_ssh_common_args": ["-o UserKnownHostsFile=\"a'b\"", "-o 'unclosed",
                                "-o UserKnownHostsFile=%d/kh", "-oUserKnownHostsFile=-x"],
    "ansible_connection": ["docker", "winrm", 5],
}  # fmt: skip


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, vs in HOSTILE.items() for v in vs])
def test_hostile_connection_values_are_one_line_reasons(key: str, value: Any) -> None:
    with pytest.raises(DeployerError) as err:
        route_from_vars("web1", {key: value})
    message = err.value.message()
    assert "web1" in message and not CONTROL_RE.search(message) and len(message) < 600


def test_a_host_without_a_route_is_a_reason_beside_the_others() -> None:
    listing = {"_meta": {"hostvars": {"good": {"ansible_host": "10.0.0.1"},
                                      "bad": {"ansible_port": "22;id"}}}}  # fmt: skip
    routes = routes_from_inventory(listing, ["good", "bad", "missing"])
    assert routes["good"] == SshRoute(host="good", address="10.0.0.1")
    assert isinstance(routes["bad"], str) and "ansible_port" in routes["bad"]
    assert routes["missing"] == SshRoute(host="missing", address="missing")


def test_read_file_argv_quotes_the_path_for_the_remote_shell() -> None:
    argv = read_file_argv(SshRoute(host="h", address="10.0.0.5"), "/var/lib/deployer/x y/api_key")
    assert argv[-3:] == ["--", "10.0.0.5", "cat -- '/var/lib/deployer/x y/api_key'"]
    assert "-N" not in argv and "ClearAllForwardings=yes" in argv


CONNECTION_KEYS = ["ansible_host", "ansible_user", "ansible_port", "ansible_ssh_private_key_file",
                   "ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_connection"]  # fmt: skip
# Arbitrary values, and plausible ones so that valid routes are built too.
value = (st.text(max_size=60) | st.integers(min_value=-(10**6), max_value=10**6) | st.booleans()
         | st.sampled_from(["10.0.0.1", "::1", "web-1.example", "deploy", "2222", 22, "/k/id",
                            "~/.ssh/id", "-o UserKnownHostsFile=/kh", "ssh", "local"]))  # fmt: skip


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(CONNECTION_KEYS), value),
       st.integers(min_value=1, max_value=65535), st.integers(min_value=1, max_value=65535))  # fmt: skip
def test_any_inventory_gives_a_safe_argv_or_one_error(
    hv: dict[str, Any], local: int, remote: int
) -> None:
    try:
        route = route_from_vars("h1", hv)
    except DeployerError as exc:
        assert not CONTROL_RE.search(exc.message())
        return
    if route.local:
        return
    for argv in (tunnel_argv(route, local, remote), read_file_argv(route, "/r/n/api_key")):
        assert argv[0] == "ssh" and argv.count("--") == 1
        end = argv.index("--")
        assert argv[end + 1] == route.address and not route.address.startswith("-")
        # Everything before `--` is an option we chose or the value right after one.
        for i, word in enumerate(argv[1:end], start=1):
            assert word.startswith("-") or argv[i - 1] in ("-o", "-p", "-l", "-i", "-L")
        assert all(not CONTROL_RE.search(w) for w in argv)
        assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
        assert not any("StrictHostKeyChecking=no" in w for w in argv)
    assert tunnel_argv(route, local, remote).count("-L") == 1


# --- the use case over an in-memory link -------------------------------------------------------


def _sample(start: float, speed: float, n: int) -> RequestSample:
    times = tuple(start + 0.1 + i / speed for i in range(n))
    return RequestSample(start_s=start, end_s=times[-1] + 0.001, first_token_s=times[0],
                         token_times_s=times, output_tokens=n)  # fmt: skip


class ServerRunner:
    """What a host's server answers (the HTTP edge, in memory): each stream at `speed` tok/s."""

    def __init__(self, speed: float, interrupt_at: int | None = None) -> None:
        self.speed, self.interrupt_at = speed, interrupt_at

    def warm_up(self, shape: RequestShape) -> RequestSample:
        return _sample(0.0, self.speed, 3)

    def run_level(self, concurrency: int, requests: int, shape: RequestShape) -> LevelRun:
        free = [0.0] * concurrency
        out = []
        for i in range(requests):
            s = _sample(free[i % concurrency], self.speed, shape.output_tokens)
            free[i % concurrency] = s.end_s
            out.append(s)
        return LevelRun(out, interrupted=concurrency == self.interrupt_at)


@dataclass
class MemoryLink:
    """Tunnels that only record being opened and closed; keys and servers from a table."""

    speeds: dict[str, float]
    keys: dict[str, str] = field(default_factory=dict)
    refuse: dict[str, str] = field(default_factory=dict)
    interrupt: dict[str, int] = field(default_factory=dict)
    raise_in_facts: dict[str, BaseException] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    keys_used: dict[str, str | None] = field(default_factory=dict)
    current: str = ""

    @contextmanager
    def tunnel(self, route: SshRoute, remote_port: int) -> Iterator[str]:
        if route.host in self.refuse:
            raise TunnelFailed(route.host, self.refuse[route.host])
        self.opened.append(route.host)
        self.current = route.host
        try:
            yield f"tunnel://{route.host}:{remote_port}"
        finally:
            self.closed.append(route.host)

    def read_key(self, route: SshRoute, path: str) -> str:
        assert path.endswith("/api_key")
        return self.keys[route.host]

    def server_facts(self, endpoint: str, api_key: str | None) -> ServerFacts:
        if self.current in self.raise_in_facts:
            raise self.raise_in_facts[self.current]
        return ServerFacts(total_slots=2, ctx=2048, model="served")

    def runner(
        self, endpoint: str, model: str, api_key: str | None, timeout_s: float
    ) -> ServerRunner:
        assert endpoint == f"tunnel://{self.current}:8080" and model == "served"
        self.keys_used[self.current] = api_key
        return ServerRunner(self.speeds[self.current], self.interrupt.get(self.current))


def _plan(host: str, *, expose: bool = False, ok: bool = True) -> HostPlan:
    fh = FleetHost(host=host, profile="cpu-x86-2c-8gb", model="demo", expose=expose)
    return HostPlan(host=fh, profile_id="cpu-x86-2c-8gb", model="demo", quant="Q4_K_M",
                    fits=ok, reason="" if ok else "demo does not fit", name=f"demo-{host}",
                    model_alias="demo")  # fmt: skip


def _options(levels: list[int] | None = None) -> FleetBenchOptions:
    return FleetBenchOptions(levels=levels, max_concurrency=4, requests=4,
                             shape=RequestShape(32, 8), goal=LatencyTarget(), timeout_s=30)  # fmt: skip


def _routes(*hosts: str) -> dict[str, SshRoute | str]:
    return {h: SshRoute(host=h, address=f"{h}.example", user="ops") for h in hosts}


def test_each_host_measured_alone_failures_beside_and_the_total_is_the_sum() -> None:
    plans = [_plan("a"), _plan("b", expose=True), _plan("c"), _plan("d", ok=False), _plan("e")]
    routes = _routes("a", "b", "c", "d") | {"e": "inventory host 'e': ansible_port '0' bad"}
    link = MemoryLink(speeds={"a": 40.0, "b": 25.0}, keys={"b": "k" * 64},
                      refuse={"c": "Connection refused"})  # fmt: skip
    seen: list[str] = []
    out = bench_fleet(plans, routes, _options(), link, clock=MemoryClock(),
                      on_host=lambda r: seen.append(r.host),
                      on_start=lambda r: seen.append(f"start {r.host}"))  # fmt: skip
    assert seen == ["start a", "a", "start b", "b", "start c", "c", "d", "e"]
    assert link.opened == link.closed == ["a", "b"]  # each closed before the next opened
    assert link.keys_used == {"a": None, "b": "k" * 64}
    rows = {h.host: h for h in out.hosts}
    assert rows["a"].result == rows["b"].result == "measured"
    assert rows["a"].via == "ssh ops@a.example"
    assert (rows["c"].result, rows["c"].reason) == ("failed", "ssh to c: Connection refused")
    assert (rows["d"].result, rows["d"].reason) == ("failed", "demo does not fit")
    assert rows["e"].result == "failed" and "ansible_port" in (rows["e"].reason or "")
    doc = out.as_dict("fleet.yml")
    json.dumps(doc)
    assert doc["ok"] is False and doc["total"]["measured"] == 2 and doc["total"]["failed"] == 3
    a, b = (doc["hosts"][i]["capacity"] for i in (0, 1))
    # Levels 1, 2 (the server's two slots): two streams at the same speed serve twice as much.
    assert a["concurrency"] == b["concurrency"] == 2
    assert a["aggregate_tokens_per_s"] > b["aggregate_tokens_per_s"] > 0
    for k in ("aggregate_tokens_per_s", "requests_per_s", "requests_per_day"):
        assert doc["total"][k] == pytest.approx(a[k] + b[k])
    best = doc["hosts"][0]["bench"]["best"]
    assert a["aggregate_tokens_per_s"] == best["aggregate_tokens_per_s"]
    assert a["requests_per_day"] == best["costs"]["requests_per_day"]
    assert doc["hosts"][0]["bench"]["target"]["endpoint"] == "http://127.0.0.1:8080"


def test_a_host_below_the_target_is_measured_and_counts_zero() -> None:
    link = MemoryLink(speeds={"slow": 2.0, "fast": 50.0})  # 2 tok/s < the 5 tok/s floor
    out = bench_fleet([_plan("slow"), _plan("fast")], _routes("slow", "fast"), _options([1, 2]),
                      link, clock=MemoryClock())  # fmt: skip
    doc = out.as_dict("inv")
    slow = doc["hosts"][0]
    assert slow["result"] == "below-target" and "missed the target" in slow["reason"]
    assert slow["capacity"]["aggregate_tokens_per_s"] == 0.0
    assert doc["ok"] is True and doc["total"]["below_target"] == 1
    assert doc["total"]["aggregate_tokens_per_s"] == doc["hosts"][1]["capacity"][
        "aggregate_tokens_per_s"]  # fmt: skip


def test_ctrl_c_in_a_sweep_closes_its_tunnel_and_skips_the_rest() -> None:
    link = MemoryLink(speeds={"a": 40.0, "b": 40.0}, interrupt={"a": 2})
    out = bench_fleet([_plan("a"), _plan("b")], _routes("a", "b"), _options([1, 2]), link,
                      clock=MemoryClock())  # fmt: skip
    assert [h.result for h in out.hosts] == ["interrupted", "not-run"]
    assert out.interrupted and link.opened == link.closed == ["a"]
    assert out.as_dict("inv")["total"]["aggregate_tokens_per_s"] == 0.0


def test_ctrl_c_before_a_sweep_closes_the_tunnel_and_keeps_the_hosts_measured() -> None:
    link = MemoryLink(speeds={"a": 40.0, "b": 40.0, "c": 40.0},
                      raise_in_facts={"b": KeyboardInterrupt()})  # fmt: skip
    out = bench_fleet([_plan("a"), _plan("b"), _plan("c")], _routes("a", "b", "c"),
                      _options([1]), link, clock=MemoryClock())  # fmt: skip
    assert [h.result for h in out.hosts] == ["measured", "interrupted", "not-run"]
    assert out.interrupted and link.opened == link.closed == ["a", "b"]
    assert "before its sweep" in (out.hosts[1].reason or "")
    total = out.as_dict("inv")["total"]
    assert total["measured"] == 1 and total["aggregate_tokens_per_s"] > 0


def test_an_error_inside_the_tunnel_is_the_hosts_reason_and_the_tunnel_closes() -> None:
    link = MemoryLink(speeds={"a": 40.0, "b": 40.0},
                      raise_in_facts={"a": TunnelFailed("a", "cannot read the API key")})  # fmt: skip
    out = bench_fleet([_plan("a"), _plan("b")], _routes("a", "b"), _options([1]), link,
                      clock=MemoryClock())  # fmt: skip
    assert out.hosts[0].reason == "ssh to a: cannot read the API key"
    assert out.hosts[1].result == "measured" and link.closed == ["a", "b"]


capacity = st.tuples(st.floats(0, 1e5), st.floats(0, 1e3))


@given(st.lists(st.one_of(st.none(), capacity), max_size=8))
def test_the_total_adds_up_whatever_the_hosts(figures: list[tuple[float, float] | None]) -> None:
    link = MemoryLink(speeds={})
    hosts: list[HostBench] = []
    for i, fig in enumerate(figures):
        if fig is None:
            hosts.append(HostBench(f"h{i}", "failed", "down"))
            continue
        speed = max(fig[0], 6.0)
        link.speeds[f"h{i}"] = speed
    plans = [_plan(f"h{i}") for i, f in enumerate(figures) if f is not None]
    out = bench_fleet(plans, _routes(*(p.host.host for p in plans)), _options([1]), link,
                      clock=MemoryClock())  # fmt: skip
    rows = out.hosts + hosts
    total = fleet_total(rows)
    caps = [h.capacity for h in rows if h.capacity is not None]
    assert total["hosts"] == len(figures) and total["failed"] == len(hosts)
    assert total["measured"] == len(caps) == len(plans)
    assert total["aggregate_tokens_per_s"] == pytest.approx(
        sum(c.aggregate_tokens_per_s for c in caps), abs=1e-3)  # fmt: skip
    assert total["requests_per_day"] == pytest.approx(
        sum(c.requests_per_day for c in caps), abs=0.1
    )


def test_a_local_port_taken_by_another_program_is_not_the_tunnel() -> None:
    # Between picking a free port and ssh's bind, another local program could listen there:
    # fleet bench would send the host's API key to it. Who owns the listener decides.
    import os
    import socket
    import subprocess
    import sys

    from deployer.adapters.ssh_tunnel import listener_owned_by

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            mine, theirs = listener_owned_by(os.getpid(), port), listener_owned_by(other.pid, port)
        finally:
            other.kill()
            other.wait()
    if mine is None:
        pytest.skip("no /proc here: ownership cannot be read")
    assert mine is True and theirs is False
    assert listener_owned_by(os.getpid(), port) is False  # closed: nobody listens
