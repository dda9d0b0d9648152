"""Hardware profiles: shipped data, user overrides, errors, and the `profiles` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deployer.cli.app import app
from deployer.core.errors import InvalidDataFile, ProfileNotFound
from deployer.core.profiles import get_profile, load_profiles
from deployer.core.resources import config_dir, data_dir
from deployer.core.units import GIB, MIB

SHIPPED = sorted(
    e.name.removesuffix(".yaml") for e in data_dir("profiles").iterdir() if e.name.endswith(".yaml")
)
REQUIRED = [
    "nvidia-a10g-24gb", "nvidia-l4-24gb", "nvidia-t4-16gb", "nvidia-a100-40gb",
    "nvidia-a100-80gb", "nvidia-h100-80gb", "nvidia-h200-141gb", "nvidia-l40s-48gb",
    "nvidia-rtx-4090-24gb", "nvidia-rtx-3090-24gb", "nvidia-2x-a100-80gb", "nvidia-4x-a100-80gb",
    "nvidia-8x-a100-80gb", "nvidia-2x-h100-80gb", "nvidia-4x-h100-80gb", "nvidia-8x-h100-80gb",
    "apple-m2-ultra-192gb", "apple-m3-ultra-96gb", "apple-m3-ultra-512gb", "apple-m4-max-128gb",
    "cpu-x86-16c-64gb", "cpu-x86-8c-32gb", "cpu-x86-2c-8gb", "cpu-x86-64c-256gb",
]  # fmt: skip

runner = CliRunner()


def _user_profile(name: str, text: str) -> Path:
    folder = config_dir() / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _valid_cpu_yaml(profile_id: str) -> str:
    return (
        f"id: {profile_id}\n"
        "name: test box\n"
        "kind: cpu\n"
        "host_ram_gib: 8\n"
        "cpu_cores: 2\n"
        "cpu_bandwidth_gbps: 20\n"
        "runtimes:\n"
        "  llamacpp:\n"
        "    mode: container\n"
        "    image: ghcr.io/ggml-org/llama.cpp:server\n"
        "source: a test\n"
    )


@pytest.mark.parametrize("profile_id", SHIPPED)
def test_every_shipped_profile_loads_and_is_documented(profile_id: str) -> None:
    profile = get_profile(profile_id)
    assert profile.id == profile_id
    assert profile.source and profile.notes
    if profile.price is not None:
        assert profile.price.source.startswith("https://")
        assert profile.price.offering and profile.price.as_of
    if profile.kind == "nvidia":
        assert profile.gpu is not None and profile.gpu.compute_capability
        assert 300 <= profile.gpu.reserve_mib <= 600
        assert profile.runtimes["llamacpp"].image == "ghcr.io/ggml-org/llama.cpp:server-cuda"
        assert profile.runtimes["ollama"].image == "docker.io/ollama/ollama"
    if profile.kind == "apple":
        assert profile.price is None
        assert all(spec.mode == "native" for spec in profile.runtimes.values())
        assert profile.unified_memory is not None
        assert "iogpu.wired_limit_mb" in profile.unified_memory.raise_hint
    if profile.kind == "cpu":
        assert profile.runtimes["llamacpp"].image == "ghcr.io/ggml-org/llama.cpp:server"
        assert profile.device_budget_bytes() == 0


def test_required_profiles_are_shipped_with_unique_ids() -> None:
    profiles = load_profiles()
    assert set(REQUIRED) <= set(profiles)
    assert len(SHIPPED) == len(set(SHIPPED)) == len(profiles)


def test_known_numbers() -> None:
    a10g = get_profile("nvidia-a10g-24gb")
    assert a10g.gpu is not None and a10g.gpu.memory_mib == 23028
    assert a10g.device_budget_bytes() == (23028 - a10g.gpu.reserve_mib) * MIB
    h100 = get_profile("nvidia-8x-h100-80gb")
    assert h100.gpu is not None and (h100.gpu.count, h100.gpu.memory_mib) == (8, 81559)
    assert h100.price is not None and h100.price.usd_per_hour == pytest.approx(98.32)
    mac = get_profile("apple-m2-ultra-192gb")
    assert mac.device_budget_bytes() == 144 * GIB
    assert mac.device_bandwidth_gbps() == 800
    assert get_profile("nvidia-t4-16gb").flash_attention


def test_unknown_key_names_file_and_line() -> None:
    text = _valid_cpu_yaml("x").replace("cpu_cores: 2\n", "cpu_cores: 2\ngpu_count: 1\n")
    path = _user_profile("x", text)
    with pytest.raises(InvalidDataFile) as info:
        load_profiles()
    assert info.value.path == str(path)
    assert info.value.line == 6
    assert "gpu_count" in info.value.problem and "unknown key" in info.value.problem


def test_wrong_type_names_file_and_line() -> None:
    path = _user_profile("x", _valid_cpu_yaml("x").replace("cpu_cores: 2", "cpu_cores: many"))
    with pytest.raises(InvalidDataFile) as info:
        load_profiles()
    assert (info.value.path, info.value.line) == (str(path), 5)
    assert info.value.problem.startswith("cpu_cores:")


def test_user_profile_overrides_shipped_and_adds_new() -> None:
    shipped = yaml.safe_load((Path(str(data_dir("profiles"))) / "nvidia-t4-16gb.yaml").read_text())
    shipped["gpu"]["reserve_mib"] = 1024
    _user_profile("nvidia-t4-16gb", yaml.safe_dump(shipped))
    _user_profile("my-box", _valid_cpu_yaml("my-box"))
    profiles = load_profiles()
    t4 = profiles["nvidia-t4-16gb"].gpu
    assert t4 is not None and t4.reserve_mib == 1024
    assert profiles["my-box"].cpu_cores == 2


def test_unknown_id_gives_close_matches() -> None:
    with pytest.raises(ProfileNotFound) as info:
        get_profile("nvidia-a10g")
    assert info.value.close_matches[0] == "nvidia-a10g-24gb"
    assert "deployer profiles list" in info.value.message()


def test_cli_list_table() -> None:
    result = runner.invoke(app, ["profiles", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "nvidia-8x-h100-80gb" in result.stdout and "98.32" in result.stdout


def test_cli_list_json() -> None:
    result = runner.invoke(app, ["profiles", "list", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert {p["id"] for p in data} == set(load_profiles())
    l4 = next(p for p in data if p["id"] == "nvidia-l4-24gb")
    assert l4["device_budget_bytes"] == get_profile("nvidia-l4-24gb").device_budget_bytes()


def test_cli_show() -> None:
    result = runner.invoke(app, ["profiles", "show", "apple-m4-max-128gb"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "iogpu.wired_limit_mb" in result.stdout
    as_json = runner.invoke(app, ["profiles", "show", "nvidia-h200-141gb", "--json"])
    data = json.loads(as_json.stdout)
    assert data["gpu"]["memory_mib"] == 143771 and data["price"] is None
    assert data["device_budget_bytes"] == (143771 - data["gpu"]["reserve_mib"]) * MIB


def test_cli_show_unknown_id_is_one_line_exit_1() -> None:
    result = runner.invoke(app, ["profiles", "show", "nvidia-h100"])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown profile 'nvidia-h100'")
    assert "nvidia-h100-80gb" in lines[0]
    assert "Traceback" not in result.output


def test_cli_invalid_user_profile_is_one_line_exit_1() -> None:
    _user_profile("x", _valid_cpu_yaml("x").replace("cpu_cores: 2", "cpu_cores: many"))
    result = runner.invoke(app, ["profiles", "list"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "x.yaml:5: cpu_cores:" in lines[0]
    assert "Traceback" not in result.output


def _list_ids() -> list[str]:
    result = runner.invoke(app, ["profiles", "list", "--json"])
    assert result.exit_code == 0, result.output
    return [p["id"] for p in json.loads(result.stdout)]


def test_list_memo_follows_every_change_to_the_profile_files() -> None:
    """`profiles list` answers from a memo of the last validation: adding, editing or breaking a
    user profile must show at once, exactly as without the memo."""
    from deployer.core.filememo import cache_dir

    first = _list_ids()
    assert list((cache_dir() / "memo" / "profiles").glob("*.json")), "no memo was written"
    assert _list_ids() == first
    path = _user_profile("my-box", _valid_cpu_yaml("my-box"))
    assert "my-box" in _list_ids()
    path.write_text(_valid_cpu_yaml("my-box").replace("test box", "renamed box"), "utf-8")
    data = json.loads(runner.invoke(app, ["profiles", "list", "--json"]).stdout)
    assert next(p for p in data if p["id"] == "my-box")["name"] == "renamed box"
    path.write_text(_valid_cpu_yaml("my-box") + "bogus_key: 1\n", "utf-8")
    broken = runner.invoke(app, ["profiles", "list"])
    assert broken.exit_code != 0 and "bogus_key" in broken.output
    path.unlink()
    assert _list_ids() == first


def test_list_memo_holds_what_validation_gives() -> None:
    fresh = _list_ids()  # validates and writes the memo
    again = json.loads(runner.invoke(app, ["profiles", "list", "--json"]).stdout)
    assert [p["id"] for p in again] == fresh
    by_id = {p["id"]: p for p in again}
    for profile_id, profile in load_profiles().items():
        assert by_id[profile_id]["device_budget_bytes"] == profile.device_budget_bytes()


def test_a_memo_of_another_shape_is_ignored() -> None:
    from deployer.core.filememo import cache_dir

    first = _list_ids()
    (entry,) = (cache_dir() / "memo" / "profiles").glob("*.json")
    data = json.loads(entry.read_text())
    data["value"] = [{"id": "stale"}]
    entry.write_text(json.dumps(data))
    result = runner.invoke(app, ["profiles", "list"])
    assert result.exit_code == 0, result.output
    assert "stale" not in result.output and first[0] in result.output
