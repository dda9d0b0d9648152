"""`deployer fleet` with the real ansible-runner: inventory hosts on Ansible's local connection
each deploy a real llama-server container of the demo model (Docker runs for real)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.adapters.docker_engine import DockerEngine
from deployer.adapters.system_probe import disk_read_ahead
from deployer.core.hardware.detect import parse_read_ahead
from tests.integration.loopback import free_port
from tests.integration.sshkit import SshHost

pytest.importorskip("ansible_runner", reason="ansible-runner is not installed ('.[fleet]')")
pytestmark = pytest.mark.docker

CLI = [sys.executable, "-c", "from deployer.cli.app import main; main()", "fleet"]


def _inventory(path: Path, image: str, hosts: dict[str, dict[str, Any]]) -> Path:
    inv = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "deployer_model": "demo",
                "deployer_profile": "cpu-x86-2c-8gb",
                "deployer_image": image,
            },
            "hosts": hosts,
        }
    }
    path.write_text(yaml.safe_dump(inv))
    return path


def _fleet(*args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def _by_host(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in out["hosts"]}


def _chat(endpoint: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    req = urllib.request.Request(
        f"{endpoint}/v1/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {key}"} if key else {})},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _deployer_names(engine: DockerEngine) -> set[str]:
    return {c.name for c in engine.list_deployer_containers()}


def _networks(engine: DockerEngine) -> set[str]:
    return {n.name for n in engine.client().networks.list()}


def test_fleet_two_hosts_deploy_one_fails_rerun_skips_status_and_down(
    engine: DockerEngine, runtime_image: str, host_root: Path, tmp_path: Path
) -> None:
    ports = {h: free_port() for h in ("node-a", "node-b", "node-bad")}
    inv = _inventory(
        tmp_path / "fleet.yml",
        runtime_image,
        {
            "node-a": {"deployer_port": ports["node-a"], "deployer_root": f"{host_root}/a"},
            # Profile from the host's own Ansible facts.
            "node-b": {"deployer_port": ports["node-b"], "deployer_root": f"{host_root}/b",
                       "deployer_profile": "detect"},
            # Made to fail on purpose: an image that exists nowhere (no registry here).
            "node-bad": {"deployer_port": ports["node-bad"], "deployer_root": f"{host_root}/bad",
                         "deployer_image": "deployer/no-such-image:0"},
            # Refused at planning: 70B does not fit 8 GB; never handed to Ansible.
            "node-small": {"deployer_model": "llama-3.1-70b-instruct",
                           "deployer_root": f"{host_root}/small"},
        },
    )  # fmt: skip
    try:
        code, out, _ = _fleet("deploy", "-i", str(inv))
        hosts = _by_host(out)
        assert code == 1 and out["ok"] is False  # one host failed: non-zero, others still done
        for h in ("node-a", "node-b"):
            assert hosts[h]["result"] == "deployed", hosts[h]
            status, reply = _chat(hosts[h]["endpoint"])
            assert status == 200 and reply["choices"][0]["message"]["content"] is not None
        assert hosts["node-b"]["detected"] and hosts["node-b"]["profile"] != "cpu-x86-2c-8gb"
        # The facts play read the host's disks: its plan sizes the mapped model's read-around
        # for them (the hosts here share this machine's kernel and disks).
        _, planned, _ = _fleet("plan", "-i", str(inv))
        assert _by_host(planned)["node-b"]["plan"]["disk_read_ahead_kb"] == (
            parse_read_ahead(disk_read_ahead()) or 128
        )
        assert hosts["node-bad"]["result"] == "failed"
        # Stopped by its preflight (the image is nowhere: not here, no registry): one line.
        assert hosts["node-bad"]["step"] == "preflight"
        assert hosts["node-bad"]["reason"].startswith(
            "registry unreachable and no local image deployer/no-such-image:0"
        )
        assert hosts["node-small"]["result"] == "not-planned"
        assert "does not fit" in hosts["node-small"]["reason"]
        names = _deployer_names(engine)
        assert {"demo-node-a", "demo-node-b"} <= names and "demo-node-bad" not in names
        assert "demo-node-bad_default" not in _networks(engine)  # the failed host left nothing
        assert not (host_root / "bad" / "demo-node-bad" / "fingerprint").exists()

        run_dir = Path(out["run_dir"])
        assert (run_dir / "project" / "deploy.yml").is_file()
        assert (run_dir / "artifacts").is_dir() and "Replay" in (run_dir / "README.txt").read_text()
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700

        # Re-run: the healthy hosts with the same plan are skipped, not redeployed.
        started = {n: engine.client().containers.get(n).attrs["State"]["StartedAt"]
                   for n in ("demo-node-a", "demo-node-b")}  # fmt: skip
        code2, out2, _ = _fleet("deploy", "-i", str(inv))
        hosts2 = _by_host(out2)
        assert code2 == 1
        assert hosts2["node-a"]["result"] == hosts2["node-b"]["result"] == "unchanged"
        assert hosts2["node-bad"]["result"] == "failed"
        for n, when in started.items():
            assert engine.client().containers.get(n).attrs["State"]["StartedAt"] == when

        code3, out3, _ = _fleet("status", "-i", str(inv))
        hosts3 = _by_host(out3)
        assert hosts3["node-a"]["result"] == "running" and hosts3["node-a"]["health"] == "200"
        assert hosts3["node-a"]["same_plan"] in (True, "True")
        assert hosts3["node-bad"]["result"] == "absent" and code3 == 1
    finally:
        _, out4, _ = _fleet("down", "-i", str(inv))
    assert _by_host(out4)["node-a"]["result"] == "removed"
    left = _deployer_names(engine)
    assert not {"demo-node-a", "demo-node-b", "demo-node-bad"} & left
    assert not {"demo-node-a_default", "demo-node-b_default"} & _networks(engine)
    assert not (host_root / "a" / "demo-node-a").exists()
    assert (host_root / "a" / "models").is_dir()  # weights stay without --purge


def test_fleet_check_mode_changes_nothing(
    engine: DockerEngine, runtime_image: str, host_root: Path, tmp_path: Path
) -> None:
    inv = _inventory(tmp_path / "fleet.yml", runtime_image, {
        "c1": {"deployer_port": free_port(), "deployer_root": f"{host_root}/c1"},
        "c2": {"deployer_port": free_port(), "deployer_root": f"{host_root}/c2"},
        # Ollama cannot run here: its host is exercised in check mode only.
        "c3-ollama": {"deployer_port": free_port(), "deployer_root": f"{host_root}/c3",
                      "deployer_backend": "ollama"},
        # Its key would be made in a folder check mode does not create.
        "c4-exposed": {"deployer_port": free_port(), "deployer_root": f"{host_root}/c4",
                       "deployer_expose": True},
    })  # fmt: skip
    code, out, _ = _fleet("deploy", "-i", str(inv), "--check")
    assert code == 0, out
    assert {h["result"] for h in out["hosts"]} == {"would-deploy"}
    assert not {"demo-c1", "demo-c2", "demo-c3-ollama", "demo-c4-exposed"} & _deployer_names(engine)
    assert not any((host_root / h).exists() for h in ("c1", "c2", "c3", "c4"))
    files = Path(out["run_dir"]) / "project" / "files"
    assert "\nFROM /models/" in (files / "c3-ollama" / "Modelfile").read_text()
    assert "ollama" in (files / "c3-ollama" / "docker-compose.yml").read_text()
    assert "llama-server" in (files / "c1" / "docker-compose.yml").read_text()


def test_fleet_refuses_an_exposed_ollama_host_at_planning(tmp_path: Path) -> None:
    inv = _inventory(tmp_path / "fleet.yml", "unused", {
        "o1": {"deployer_backend": "ollama", "deployer_expose": True},
        "l1": {"deployer_expose": True},
    })  # fmt: skip
    code, out, _ = _fleet("plan", "-i", str(inv))
    hosts = _by_host(out)
    assert code == 1
    assert hosts["o1"]["result"] == "not-planned" and "API key" in hosts["o1"]["reason"]
    assert hosts["l1"]["result"] == "planned" and hosts["l1"]["endpoint"].startswith(
        "http://0.0.0.0"
    )


def test_fleet_serial_with_zero_failures_allowed_stops_after_the_failing_batch(
    engine: DockerEngine, runtime_image: str, host_root: Path, tmp_path: Path
) -> None:
    inv = _inventory(tmp_path / "fleet.yml", runtime_image, {
        "a-bad": {"deployer_port": free_port(), "deployer_root": f"{host_root}/x",
                  "deployer_image": "deployer/no-such-image:0"},
        "b-next": {"deployer_port": free_port(), "deployer_root": f"{host_root}/y"},
    })  # fmt: skip
    code, out, _ = _fleet("deploy", "-i", str(inv), "--serial", "1", "--max-fail-percentage", "0")
    hosts = _by_host(out)
    assert code == 1
    assert hosts["a-bad"]["result"] == "failed"
    assert hosts["b-next"]["result"] == "not-run" and "max fail" in hosts["b-next"]["reason"]
    assert "demo-b-next" not in _deployer_names(engine)
    # a-bad failed its preflight: above 0% the play is not started at all.
    assert hosts["a-bad"]["step"] == "preflight"
    assert not (Path(out["run_dir"]) / "artifacts" / "run").exists()


def test_fleet_expose_keeps_the_key_on_the_host_and_out_of_the_run_folder(
    engine: DockerEngine, runtime_image: str, host_root: Path, tmp_path: Path
) -> None:
    port = free_port()
    inv = _inventory(tmp_path / "fleet.yml", runtime_image, {
        "k1": {"deployer_port": port, "deployer_root": f"{host_root}/k", "deployer_expose": True},
    })  # fmt: skip
    try:
        code, out, err = _fleet("deploy", "-i", str(inv))
        assert code == 0, err
        key_file = host_root / "k" / "demo-k1" / "api_key"
        key = key_file.read_text().strip()
        assert len(key) >= 32
        if os.geteuid() == 0:
            assert key_file.stat().st_uid == 65534
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        endpoint = f"http://127.0.0.1:{port}"
        assert _chat(endpoint)[0] == 401
        assert _chat(endpoint, key)[0] == 200
        # The secret is nowhere in what Ansible kept, nor in what we printed.
        run_dir = Path(out["run_dir"])
        for f in run_dir.rglob("*"):
            if f.is_file():
                assert key not in f.read_text(errors="replace"), f
        assert key not in json.dumps(out) and key not in err
    finally:
        _fleet("down", "-i", str(inv))
    assert not (host_root / "k" / "demo-k1").exists()


def test_fleet_over_real_ssh_deploys_and_tears_down(
    engine: DockerEngine, runtime_image: str, host_root: Path, tmp_path: Path, ssh_host: SshHost
) -> None:
    """Ansible's ssh connection to a real sshd (on 127.0.0.1): modules, file copies of the
    weights and artifacts, and the health and smoke checks all travel over SSH."""
    port = free_port()
    inv = _inventory(tmp_path / "fleet.yml", runtime_image, {
        "over-ssh": {**ssh_host.inventory_vars(), "deployer_port": port,
                     "deployer_root": f"{host_root}/s", "deployer_profile": "detect"},
    })  # fmt: skip
    try:
        code, out, err = _fleet("deploy", "-i", str(inv))
        assert code == 0, err
        host = _by_host(out)["over-ssh"]
        assert host["result"] == "deployed" and host["detected"]
        assert _chat(f"http://127.0.0.1:{port}")[0] == 200
        assert (host_root / "s" / "models" / "gemma-3-270m-q4_k_m.gguf").stat().st_size > 0
    finally:
        _, down, _ = _fleet("down", "-i", str(inv))
    assert _by_host(down)["over-ssh"]["result"] == "removed"
    assert "demo-over-ssh" not in _deployer_names(engine)
