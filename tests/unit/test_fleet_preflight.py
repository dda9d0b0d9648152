"""Fleet preflight and shipping: a host's probe read back, the decision per piece (present,
pull, download, ship), the parts still to send, and one-line reasons from Ansible's failures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deployer.core.fleet.hosts import FleetHost, HostPlan, Weight, outcomes_from_events
from deployer.core.fleet.preflight import (
    ProbeUnreadable,
    decide,
    probe_from_text,
    probe_request,
    transfers,
)
from deployer.core.fleet.reasons import explain, explain_unreachable
from deployer.core.fleet.shipping import Blob, FleetImage, ImageArchive, registry_of

IMAGE_ID = "sha256:" + "d7" * 32
SHA = "a5" * 32
MIB = 1 << 20
DEST = "/var/lib/deployer/models/gemma.gguf"

# What templates/ansible/probe.py printed on a real host (a run of `fleet deploy`), as text.
RECORDED = json.dumps({
    "compose": "docker-compose", "disk": {"free": 72612548608, "path": "/var/lib/deployer"},
    "docker": {"ok": True, "version": "20.10.24+dfsg1"},
    "files": {DEST: {"parts": {}, "state": "verified"}},
    "image_id": IMAGE_ID, "image_parts": {}, "own_running": False, "port_busy": False,
    "python": "3.11.7", "uid": 0,
})  # fmt: skip


def _probe(**changes: Any) -> str:
    raw = json.loads(RECORDED)
    raw.update(changes)
    return json.dumps(raw)


def _plan(size: int = 300 * MIB, url: str | None = None) -> HostPlan:
    hp = HostPlan(host=FleetHost("n1", "cpu", "demo"), fits=True, name="demo-n1",
                  image="deployer/llama-server:1-cpu")  # fmt: skip
    hp.weights = [Weight(DEST, size, src=None if url else "/cache/gemma.gguf", url=url,
                         sha256=SHA)]  # fmt: skip
    return hp


SHIPPABLE = FleetImage("deployer/llama-server:1-cpu", "local build", None, IMAGE_ID)
OFFICIAL = FleetImage("ghcr.io/ggml-org/llama.cpp:server-b1", "official", "ghcr.io", None)


def test_a_recorded_probe_reads_back_and_a_ready_host_needs_nothing() -> None:
    probe = probe_from_text(RECORDED)
    assert probe.docker_ok and probe.compose == "docker-compose" and probe.image_id == IMAGE_ID
    d = decide(_plan(), probe, SHIPPABLE, image_bytes=30 * MIB)
    assert d.ok and d.image == "present" and d.weights == {DEST: "present"} and d.needs_bytes == 0


@pytest.mark.parametrize(
    "text", ["", "not json", "[]", '{"docker": 1}', "x" * 3_000_000, "\x1b[2J"]
)
def test_an_unreadable_probe_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ProbeUnreadable) as info:
        probe_from_text(text)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_hostile_probe_fields_are_dropped_not_trusted() -> None:
    probe = probe_from_text(_probe(
        compose="rm -rf /", image_id="sha256:../../x", disk={"free": -5, "path": "a\nb"},
        files={DEST: {"state": "owned", "parts": {}}, "x": {"state": "verified",
               "parts": {"../p": 5, "00001": True, "00002": 7}}},
    ))  # fmt: skip
    assert probe.compose is None and probe.image_id is None and probe.disk_free is None
    assert "\n" not in probe.disk_path
    assert DEST not in probe.files and probe.files["x"].parts == {"00002": 7}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"compose": None}, "docker compose not found; install docker-compose-plugin"),
        ({"docker": {"ok": False, "error": "permission denied while trying to connect to the "
                     "Docker daemon socket"}}, "cannot use Docker as this user"),
        ({"docker": {"ok": False, "error": "Cannot connect to the Docker daemon at unix:///x. "
                     "Is the docker daemon running?"}}, "the Docker engine is not running"),
        ({"port_busy": True}, "port 8080 is in use on the host; free it or set deployer_port"),
    ],
)  # fmt: skip
def test_each_problem_is_one_line_with_the_next_step(changes: dict[str, Any], reason: str) -> None:
    d = decide(_plan(), probe_from_text(_probe(**changes)), SHIPPABLE, image_bytes=0)
    assert not d.ok and d.reason.startswith(reason) and "\n" not in d.reason


def test_our_own_server_on_the_port_is_not_a_conflict() -> None:
    probe = probe_from_text(_probe(port_busy=True, own_running=True))
    assert decide(_plan(), probe, SHIPPABLE, image_bytes=0).ok


def test_image_present_pulled_shipped_or_missing() -> None:
    absent = probe_from_text(_probe(image_id=None, registry={"ok": False, "error": "no such host"}))
    assert decide(_plan(), absent, SHIPPABLE, image_bytes=0).image == "ship"
    missing = decide(_plan(), absent, OFFICIAL, image_bytes=0)
    assert missing.reason.startswith("registry unreachable and no local image ghcr.io/")
    assert "no such host" in missing.reason
    reachable = probe_from_text(_probe(image_id=None, registry={"ok": True}))
    assert decide(_plan(), reachable, OFFICIAL, image_bytes=0).image == "pull"
    # The host holds another build under the same tag: the controller's image is shipped.
    other = probe_from_text(_probe(image_id="sha256:" + "00" * 32))
    assert decide(_plan(), other, SHIPPABLE, image_bytes=0).image == "ship"


def test_weights_present_downloaded_or_shipped_and_the_disk_they_need() -> None:
    absent = {DEST: {"state": "absent", "parts": {}}}
    hub = "http://hub/org/repo/resolve/c/gemma.gguf"
    online = probe_from_text(_probe(files=absent, hub={"ok": True}))
    assert decide(_plan(url=hub), online, SHIPPABLE, image_bytes=0).weights[DEST] == "download"
    offline = probe_from_text(_probe(files=absent, hub={"ok": False, "error": "timed out"}))
    d = decide(_plan(url=hub), offline, SHIPPABLE, image_bytes=0)
    assert d.weights[DEST] == "ship" and d.needs_bytes == 300 * MIB + 128 * MIB
    small = probe_from_text(_probe(files=absent, disk={"free": 100 * MIB, "path": "/srv"}))
    full = decide(_plan(), small, SHIPPABLE, image_bytes=0)
    assert full.reason == (
        "not enough disk for the weights (needs 428.0 MiB, has 100.0 MiB) in /srv; free space "
        "there or set deployer_root to a larger disk"
    )


def test_only_missing_parts_are_sent_and_a_hashed_file_gets_its_mark() -> None:
    blob = Blob(SHA, 300 * MIB, ("/c/00000", "/c/00001", "/c/00002"))
    half = {DEST: {"state": "absent", "parts": {"00000": 128 * MIB, "00001": 5}}}
    hp = _plan()
    probe = probe_from_text(_probe(files=half, image_id=None))
    d = decide(hp, probe, SHIPPABLE, image_bytes=30 * MIB)
    archive = ImageArchive(SHIPPABLE.tag, IMAGE_ID, Blob("b" * 64, 30 * MIB, ("/c/img0",)))
    t = transfers(hp, d, probe, archive=archive, blobs={DEST: blob})
    sent = [s["src"] for s in t.send]
    assert sent == ["/c/img0", "/c/00001", "/c/00002"]  # part 0 arrived whole: not sent again
    assert t.bytes_sent == 30 * MIB + 128 * MIB + 44 * MIB
    assert t.assemble[0]["count"] == 3 and t.image_load and t.image_load["id"] == IMAGE_ID
    hashed = probe_from_text(_probe(files={DEST: {"state": "hashed", "parts": {}}}))
    again = transfers(hp, decide(hp, hashed, SHIPPABLE, image_bytes=0), hashed, archive=None,
                      blobs={})  # fmt: skip
    assert again.send == [] and again.marks[0]["text"] == f"{SHA} {300 * MIB}"
    assert again.summary()["parts_sent"] == 0


def test_the_probe_asks_no_registry_for_a_local_build_and_the_hub_only_for_hub_weights() -> None:
    req = probe_request(_plan(), SHIPPABLE, "https://huggingface.co")
    assert req["registry"] is None and req["hub"] is None
    req = probe_request(_plan(url="https://huggingface.co/o/r/resolve/c/g.gguf"), OFFICIAL,
                        "https://huggingface.co")  # fmt: skip
    assert req["registry"] == "https://ghcr.io/v2/" and req["hub"] == "https://huggingface.co"


@pytest.mark.parametrize(
    ("tag", "registry"),
    [("ghcr.io/ggml-org/llama.cpp:server", "ghcr.io"), ("ollama/ollama:0.1", "registry-1.docker.io"),
     ("localhost:5000/x:1", "localhost:5000"), ("deployer/llama-server:1-cpu", "registry-1.docker.io")],
)  # fmt: skip
def test_registry_of_an_image(tag: str, registry: str) -> None:
    assert registry_of(tag) == registry


# Failures as Ansible reported them in real runs (task name, text of msg/stderr).
RECORDED_FAILURES = [
    ("bring the server up", 'Error response from daemon: Get "https://registry-1.docker.io/v2/":'
     " dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host (exit 1)",
     "registry unreachable and no local image"),
    ("bring the server up", "Error starting userland proxy: listen tcp4 127.0.0.1:8080: bind: "
     "address already in use", "the port is in use on the host"),
    ("join the weights parts (sha256 checked)", "cat: write error: No space left on device",
     "disk full on the host"),
    ("join the weights parts (sha256 checked)", "sha256 mismatch: /x is 00, expected 11",
     "a transfer arrived corrupted"),
    ("wait until healthy", "Status code was -1 and not [200]: Request failed: <urlopen error "
     "[Errno 111] Connection refused>", "the server did not become healthy in time"),
    ("smoke test (one chat completion)", "Status code was 500 and not [200]: HTTP Error 500",
     "the server is up but the smoke test failed (HTTP 500)"),
    ("bring the server up", "/bin/sh: 1: docker-compose: not found", "docker compose not found"),
    ("copy the rendered files", "Destination /x not writable", "copy the rendered files: "
     "Destination /x not writable; see the run folder"),
]  # fmt: skip


@pytest.mark.parametrize(("step", "text", "reason"), RECORDED_FAILURES)
def test_recorded_failures_map_to_one_line_reasons(step: str, text: str, reason: str) -> None:
    line = explain(step, text)
    assert line.startswith(reason) and "\n" not in line and ";" in line


def test_unreachable_hosts_say_what_to_check() -> None:
    assert "check ansible_user" in explain_unreachable(
        "Failed to connect to the host via ssh: root@10.0.0.5: Permission denied (publickey)."
    )
    line = explain_unreachable("Failed to connect to the host via ssh: ssh: connect to host "
                               "10.0.0.5 port 22: Connection refused")  # fmt: skip
    assert line.startswith("unreachable over SSH (") and "check ansible_host" in line


def test_a_rescued_failure_is_reported_with_its_reason_and_raw_detail() -> None:
    ev = {"event": "runner_on_ok", "event_data": {"host": "n1", "task": "report failed", "res": {
        "msg": {"deployer": {"result": "failed", "step": "bring the server up",
                             "detail": "Bind for 127.0.0.1:8080 failed: port is already allocated",
                             "last_logs": []}}}}}  # fmt: skip
    o = outcomes_from_events([ev], ["n1"], default="failed")["n1"]
    assert o.result == "failed" and o.step == "bring the server up"
    assert o.reason.startswith("the port is in use on the host; free it or set deployer_port")
    assert "port is already allocated" in o.details["detail"]


def test_a_host_running_todays_plan_healthy_is_unchanged_and_anything_less_is_not() -> None:
    hp = _plan()
    same = probe_from_text(_probe(fingerprint=hp.fingerprint(), health=200, port_busy=True))
    assert decide(hp, same, SHIPPABLE, image_bytes=0).unchanged
    sick = probe_from_text(_probe(fingerprint=hp.fingerprint(), health=503))
    old = probe_from_text(_probe(fingerprint="0" * 64, health=200))
    for probe in (sick, old):
        assert not decide(hp, probe, SHIPPABLE, image_bytes=0).unchanged
    assert probe_from_request_checks(hp)


def probe_from_request_checks(hp: HostPlan) -> bool:
    req = probe_request(hp, SHIPPABLE, "https://huggingface.co")
    return bool(
        req["fingerprint"] == hp.fingerprint() and str(req["health_url"]).endswith(":8080/health")
    )
