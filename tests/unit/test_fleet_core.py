"""Fleet core: inventory variables, facts -> profile, playbooks, and outcomes from events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from deployer.core.errors import InvalidRequest
from deployer.core.fleet.hosts import (
    DEFAULT_PORT,
    DEFAULT_ROOT,
    FleetHost,
    HostPlan,
    Weight,
    deployment_name,
    hosts_from_inventory,
    outcomes_from_events,
    probe_from_facts,
    render_playbook,
)
from deployer.core.hardware.detect import (
    detect_hardware,
    match_profile,
    parse_read_ahead,
    read_ahead_listing,
)
from deployer.core.hardware.profiles import load_profiles


def _listing(hostvars: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"_meta": {"hostvars": hostvars}, "all": {"children": ["ungrouped"]},
            "ungrouped": {"hosts": sorted(hostvars)}}  # fmt: skip


def test_inventory_variables_and_defaults() -> None:
    hosts = hosts_from_inventory(
        _listing({
            "gpu1": {"deployer_model": "llama-3.1-8b-instruct", "deployer_profile": "nvidia-a10g-24gb",
                     "deployer_port": "9000", "deployer_expose": "yes", "ansible_host": "10.0.0.5"},
            "cpu1": {"deployer_model": "demo"},
            "bastion": {"ansible_host": "10.0.0.1"},  # no model: not part of the deployments
        })
    )  # fmt: skip
    by = {h.host: h for h in hosts}
    assert set(by) == {"gpu1", "cpu1"}
    assert by["gpu1"].port == 9000 and by["gpu1"].expose is True
    assert by["cpu1"] == FleetHost(host="cpu1", profile="detect", model="demo")
    assert by["cpu1"].port == DEFAULT_PORT and by["cpu1"].root == DEFAULT_ROOT


@pytest.mark.parametrize(
    ("hv", "words"),
    [
        ({"deployer_model": "demo", "deployer_modle": "x"}, "unknown variable 'deployer_modle'"),
        ({"deployer_model": "demo", "deployer_port": "http"}, "must be a whole number"),
        ({"deployer_model": "demo", "deployer_port": 70000}, "70000 is not between 1 and 65535"),
        ({"deployer_model": "demo", "deployer_root": "models"}, "absolute path"),
    ],
)
def test_bad_inventory_variables_are_named(hv: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        hosts_from_inventory(_listing({"h1": hv}))
    assert words in info.value.message() and "h1" in info.value.message()


def test_inventory_without_models_says_what_to_set() -> None:
    with pytest.raises(InvalidRequest) as info:
        hosts_from_inventory(_listing({"h1": {"ansible_host": "x"}}))
    assert "deployer_model" in info.value.message()


def test_default_names_differ_per_host_and_are_ones_the_renderer_accepts() -> None:
    a, b = deployment_name("llama-3-1-8b", "GPU_01.example.com"), deployment_name("m", "h")
    assert a == "llama-3-1-8b-gpu-01-example-com" and b == "m-h"
    long_a, long_b = deployment_name("x" * 80, "y"), deployment_name("x" * 80, "z")
    assert len(long_a) <= 52 and long_a != long_b  # cut, yet still apart


def test_facts_of_an_a10g_host_match_the_a10g_profile() -> None:
    facts = {"ansible_system": "Linux", "ansible_architecture": "x86_64",
             "ansible_memtotal_mb": "63000", "ansible_processor_cores": 8,
             "ansible_processor_count": 1, "ansible_processor_vcpus": "16"}  # fmt: skip
    probe = probe_from_facts(facts, {"nvidia": "NVIDIA A10G, 23028, 8.6"})
    assert probe.ram_bytes == 63000 * 1024 * 1024 and probe.cpu_threads == 16
    match = match_profile(detect_hardware(probe), load_profiles())
    assert match.profile.kind == "nvidia" and "a10g" in match.profile.id


def test_a_hosts_disks_read_ahead_reaches_its_profile() -> None:
    # The facts play's `grep -H . /sys/block/*/queue/read_ahead_kb`: the largest real disk's
    # read-around sizes a mapped model's room (loop and device-mapper devices are skipped).
    facts = {"ansible_system": "Linux", "ansible_architecture": "x86_64",
             "ansible_memtotal_mb": 65536, "ansible_processor_cores": 16,
             "ansible_processor_count": 1, "ansible_processor_vcpus": 32}  # fmt: skip
    listing = (
        "/sys/block/loop0/queue/read_ahead_kb:131072\n/sys/block/dm-0/queue/read_ahead_kb:65536\n"
        "/sys/block/nvme0n1/queue/read_ahead_kb:128\n/sys/block/sda/queue/read_ahead_kb:4096\n"
    )
    probe = probe_from_facts(facts, {"nvidia": "", "read_ahead": listing})
    assert probe.read_ahead_kb == ("128", "4096")
    match = match_profile(detect_hardware(probe), load_profiles())
    assert match.profile.disk_read_ahead_kb == 4096
    # Without the listing (macOS, an old host) the profile keeps Linux's default.
    plain = match_profile(detect_hardware(probe_from_facts(facts, {})), load_profiles())
    assert plain.profile.disk_read_ahead_kb == 128


@given(st.text(max_size=400))
def test_a_hostile_read_ahead_listing_gives_only_sane_values(text: str) -> None:
    values = read_ahead_listing(text)
    assert all(v.isascii() and v.isdigit() and len(v) <= 9 for v in values)
    kb = parse_read_ahead(values)
    assert kb is None or 4 <= kb <= 1 << 20


def test_facts_without_a_gpu_give_a_cpu_profile() -> None:
    facts = {"ansible_system": "Linux", "ansible_architecture": "x86_64",
             "ansible_memtotal_mb": 65536, "ansible_processor_cores": 16,
             "ansible_processor_count": 1, "ansible_processor_vcpus": 32}  # fmt: skip
    match = match_profile(detect_hardware(probe_from_facts(facts, {"nvidia": ""})), load_profiles())
    assert match.profile.kind == "cpu"


def test_fingerprint_changes_with_what_the_host_runs_only() -> None:
    h = FleetHost(host="a", profile="p", model="demo", port=8080)
    base = HostPlan(host=h, name="n", files={"docker-compose.yml": "x"},
                    weights=[Weight(dest="/m/f.gguf", size=1, src="/here/f.gguf")], image="i")  # fmt: skip
    moved = HostPlan(host=h, name="n", files={"docker-compose.yml": "x"},
                     weights=[Weight(dest="/m/f.gguf", size=1, src="/elsewhere/f.gguf")], image="i")  # fmt: skip
    other = HostPlan(host=h, name="n", files={"docker-compose.yml": "y"},
                     weights=base.weights, image="i")  # fmt: skip
    assert base.fingerprint() == moved.fingerprint()  # where we copy from is not what runs
    assert base.fingerprint() != other.fingerprint()


@pytest.mark.parametrize("kind", ["facts", "deploy", "status", "down"])
def test_every_playbook_renders_to_yaml_with_only_builtin_modules(kind: str) -> None:
    play = yaml.safe_load(render_playbook(kind))[0]
    tasks = list(play["tasks"])
    for t in list(tasks):
        tasks += t.get("block", []) + t.get("rescue", [])
    modules = {k for t in tasks for k in t if "." in k}
    assert modules and all(m.startswith("ansible.builtin.") for m in modules), modules


def test_deploy_playbook_carries_serial_and_max_fail_only_when_given() -> None:
    plain = yaml.safe_load(render_playbook("deploy"))[0]
    assert "serial" not in plain and "max_fail_percentage" not in plain
    rolled = yaml.safe_load(render_playbook("deploy", serial="25%", max_fail_percentage=10))[0]
    assert rolled["serial"] == "25%" and rolled["max_fail_percentage"] == 10


def test_down_removes_weights_only_with_purge() -> None:
    assert "remove the weights" not in render_playbook("down")
    assert "remove the weights" in render_playbook("down", purge=True)


def _ev(kind: str, host: str, task: str, res: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res or {}}}


def test_outcomes_keep_the_report_reason_over_the_final_fail() -> None:
    events = [
        _ev("runner_on_start", "a", "bring the server up"),
        _ev("runner_on_failed", "a", "bring the server up", {"msg": "non-zero return code", "stderr": "boom"}),
        _ev("runner_on_ok", "a", "report failed",
            {"msg": {"deployer": {"result": "failed", "step": "bring the server up",
                                  "detail": "boom"}}}),
        _ev("runner_on_failed", "a", "fail this host", {"msg": "bring the server up failed"}),
        _ev("runner_on_ok", "b", "report deployed", {"msg": {"deployer": {"result": "deployed"}}}),
        _ev("runner_on_unreachable", "c", "find docker", {"msg": "ssh: connect refused"}),
    ]  # fmt: skip
    out = outcomes_from_events(events, ["a", "b", "c", "d"], default="failed")
    assert out["a"].result == "failed" and out["a"].reason.startswith("bring the server up: boom")
    assert out["a"].step == "bring the server up" and out["a"].details["detail"] == "boom"
    assert out["b"].result == "deployed"
    assert out["c"].result == "unreachable" and "refused" in out["c"].reason
    assert out["d"].result == "not-run"


def test_a_failure_without_report_uses_stderr_and_censored_output_stays_hidden() -> None:
    events = [
        _ev("runner_on_failed", "a", "copy", {"msg": "non-zero return code", "rc": 1,
                                              "stderr": "cat: write error: No space left on device"}),
        _ev("runner_on_failed", "b", "key", {"censored": "the output has been hidden"}),
    ]  # fmt: skip
    out = outcomes_from_events(events, ["a", "b"], default="failed")
    assert out["a"].reason.startswith("disk full on the host (no space left on device); ")
    assert out["a"].details["detail"] == "cat: write error: No space left on device (exit 1)"
    assert "hidden" in out["b"].reason


def test_facts_of_a_mac_studio_match_the_m2_ultra_profile() -> None:
    facts = {"ansible_system": "Darwin", "ansible_architecture": "arm64",
             "ansible_memtotal_mb": 196608, "ansible_processor_vcpus": 24}  # fmt: skip
    probe = probe_from_facts(facts, {"sysctl": "Apple M2 Ultra\n206158430208"})
    match = match_profile(detect_hardware(probe), load_profiles())
    assert match.profile.kind == "apple" and "m2-ultra" in match.profile.id


@pytest.mark.parametrize("serial", ["²", "１", "1\n", "1: x", "-1", "50%%"])
def test_serial_must_be_ascii_digits_before_it_reaches_the_playbook(
    serial: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from deployer.cli.app import app

    inv = tmp_path / "fleet.yml"  # never read: the option is refused first
    result = CliRunner().invoke(app, ["fleet", "deploy", "-i", str(inv), "--serial", serial])
    assert result.exit_code == 2 and "--serial" in result.output


@pytest.mark.parametrize("image", ["img --privileged", "{{ lookup('pipe','id') }}", "a\nb"])
def test_the_image_option_is_checked_like_the_inventory_variable(
    image: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from deployer.cli.app import app

    inv = tmp_path / "fleet.yml"
    inv.write_text("all: {hosts: {h1: {deployer_model: demo}}}\n")
    result = CliRunner().invoke(app, ["fleet", "plan", "-i", str(inv), "--image", image])
    assert result.exit_code == 2 and "--image: image" in result.output
