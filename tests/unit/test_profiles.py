"""Hardware profiles: shipped data, user overrides, errors, and the `profiles` CLI."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from typer.testing import CliRunner

from deployer.adapters.data_files import config_dir, data_dir
from deployer.cli.app import app
from deployer.core.datafiles import ID_RE, parse_yaml_model, validate_data
from deployer.core.errors import InvalidDataFile, ProfileNotFound
from deployer.core.hardware.profiles import Profile, get_profile, load_profiles
from deployer.core.units import GIB, MIB
from tests.unit.hostile_yaml import BILLION_LAUGHS, DEEP, mutated, random_document

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
        # the CUDA context and pool: 587-696 MiB measured on an H200 (docs/fit.md "On a GPU")
        assert 300 <= profile.gpu.reserve_mib <= 800
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
    from deployer.adapters.filememo import cache_dir

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
    from deployer.adapters.filememo import cache_dir

    first = _list_ids()
    (entry,) = (cache_dir() / "memo" / "profiles").glob("*.json")
    data = json.loads(entry.read_text())
    data["value"] = [{"id": "stale"}]
    entry.write_text(json.dumps(data))
    result = runner.invoke(app, ["profiles", "list"])
    assert result.exit_code == 0, result.output
    assert "stale" not in result.output and first[0] in result.output


# ---- hostile profiles: bounded numbers, safe strings, one-line errors ------------------------


def _one_line(err: InvalidDataFile) -> str:
    msg = err.message()
    assert "\n" not in msg and msg.isprintable(), repr(msg)
    return msg


def _load_text(text: str, stem: str = "x") -> Profile:
    _user_profile(stem, text)
    return load_profiles()[stem]


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("host_ram_gib: 8", "host_ram_gib: .inf", "host_ram_gib"),
        ("host_ram_gib: 8", "host_ram_gib: .nan", "host_ram_gib"),
        ("host_ram_gib: 8", "host_ram_gib: 1e308", "host_ram_gib"),
        ("host_ram_gib: 8", "host_ram_gib: 1.0e+308", "host_ram_gib"),
        ("host_ram_gib: 8", "host_ram_gib: 0", "host_ram_gib"),
        ("host_ram_gib: 8", "host_ram_gib: -8", "host_ram_gib"),
        ("host_ram_gib: 8", "host_ram_gib: 70000", "host_ram_gib"),  # above 64 TiB
        ("cpu_cores: 2", "cpu_cores: 0", "cpu_cores"),
        ("cpu_cores: 2", "cpu_cores: 1.0e+308", "cpu_cores"),
        ("cpu_cores: 2", "cpu_cores: 18446744073709551617", "cpu_cores"),
        ("cpu_bandwidth_gbps: 20", "cpu_bandwidth_gbps: .inf", "cpu_bandwidth_gbps"),
        ("cpu_bandwidth_gbps: 20", "cpu_bandwidth_gbps: 100000", "cpu_bandwidth_gbps"),
        ("cpu_bandwidth_gbps: 20", "cpu_bandwidth_gbps: 0", "cpu_bandwidth_gbps"),
        ("source: a test", "source: a test\nprice: {usd_per_hour: -1, offering: o, source: s, "
         "as_of: '2025'}", "price.usd_per_hour"),
        ("source: a test", "source: a test\nprice: {usd_per_hour: .inf, offering: o, source: s, "
         "as_of: '2025'}", "price.usd_per_hour"),
    ],
)  # fmt: skip
def test_numbers_outside_physical_bounds_are_refused_naming_the_field(
    old: str, new: str, field: str
) -> None:
    with pytest.raises(InvalidDataFile) as info:
        _load_text(_valid_cpu_yaml("x").replace(old, new))
    assert info.value.problem.startswith(f"{field}:"), info.value.problem
    _one_line(info.value)


_GPU = (
    "id: g\nname: gpu box\nkind: nvidia\nhost_ram_gib: 64\ncpu_cores: 8\ncpu_bandwidth_gbps: 50\n"
    "runtimes: {}\nsource: a test\n"
    "gpu: {name: G, memory_mib: 24576, reserve_mib: 500, bandwidth_gbps: 600, count: 1}\n"
)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("memory_mib: 24576", "memory_mib: 0", "gpu.memory_mib"),
        ("memory_mib: 24576", "memory_mib: 1.0e+308", "gpu.memory_mib"),
        ("memory_mib: 24576", "memory_mib: 68719476736", "gpu.memory_mib"),
        ("reserve_mib: 500", "reserve_mib: 24576", "gpu"),  # nothing left for the model
        ("bandwidth_gbps: 600", "bandwidth_gbps: .inf", "gpu.bandwidth_gbps"),
        ("bandwidth_gbps: 600", "bandwidth_gbps: -600", "gpu.bandwidth_gbps"),
        ("count: 1", "count: 0", "gpu.count"),
        ("count: 1", "count: 100000", "gpu.count"),
    ],
)
def test_gpu_numbers_outside_physical_bounds_are_refused(old: str, new: str, field: str) -> None:
    assert _load_text(_GPU, "g").gpu is not None  # the unmutated one is fine
    with pytest.raises(InvalidDataFile) as info:
        _load_text(_GPU.replace(old, new), "g")
    assert info.value.problem.startswith(f"{field}:"), info.value.problem


def test_a_free_price_is_accepted() -> None:
    text = (
        _valid_cpu_yaml("x") + "price: {usd_per_hour: 0, offering: o, source: s, as_of: '2025'}\n"
    )
    price = _load_text(text).price
    assert price is not None and price.usd_per_hour == 0


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("id: x", "id: '../x'", "id"),
        ("id: x", "id: 'X'", "id"),
        ("name: test box", 'name: "a\\e[2Jb"', "name"),
        ("name: test box", 'name: "two\\nlines"', "name"),
        ("name: test box", "name: '{{ 7 * 7 }}'", "name"),
        ("name: test box", "name: '" + "n" * 300 + "'", "name"),
        ("source: a test", 'source: "\\u2028"', "source"),
        ("image: ghcr.io/ggml-org/llama.cpp:server", "image: 'x y'", "runtimes.llamacpp.image"),
        ("cpu_cores: 2", "cpu_cores: 2\ncpu_flags: ['avx2', 'a b']", "cpu_flags.1"),
    ],
)
def test_strings_must_have_a_safe_form(old: str, new: str, field: str) -> None:
    with pytest.raises(InvalidDataFile) as info:
        _load_text(_valid_cpu_yaml("x").replace(old, new))
    assert info.value.problem.startswith(f"{field}:"), info.value.problem
    _one_line(info.value)


def test_markup_is_plain_text_in_a_profile() -> None:
    text = _valid_cpu_yaml("x").replace("name: test box", "name: '[/x] [red]r[/red]'")
    assert _load_text(text).name == "[/x] [red]r[/red]"


def test_several_problems_give_the_first_and_a_count_in_one_line() -> None:
    text = (
        _valid_cpu_yaml("x")
        .replace("host_ram_gib: 8", "host_ram_gib: .inf")
        .replace("cpu_cores: 2", "cpu_cores: -1")
        .replace("name: test box", "name: '{{ x }}'")
    )
    path = _user_profile("x", text)
    with pytest.raises(InvalidDataFile) as info:
        load_profiles()
    msg = _one_line(info.value)
    assert msg.startswith(f"{path}:2: name: contains template syntax")
    assert msg.endswith("(+2 more)")


def test_a_key_from_the_file_is_quoted_in_the_message() -> None:
    with pytest.raises(InvalidDataFile) as info:
        _load_text(_valid_cpu_yaml("x") + '"[/x]\\n\\e[2J": 1\n')
    assert "'[/x]\\n\\x1b[2J': unknown key" in _one_line(info.value)


def test_yaml_errors_are_one_line_with_their_line() -> None:
    with pytest.raises(InvalidDataFile) as info:
        _load_text(_valid_cpu_yaml("x") + "notes: 'bad\x01'\n")
    assert info.value.line == 12 and "#x0001" in _one_line(info.value)
    with pytest.raises(InvalidDataFile) as info:
        _load_text(_valid_cpu_yaml("x") + "notes: [\n")
    assert info.value.line is not None and "invalid YAML" in _one_line(info.value)


@pytest.mark.parametrize(
    "tag", ["!!python/object/apply:os.system ['touch pwned']", "!!python/name:os.system"]
)
def test_python_tags_are_refused(tag: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidDataFile) as info:
        _load_text(_valid_cpu_yaml("x").replace("name: test box", f"name: {tag}"))
    assert "invalid YAML" in _one_line(info.value)
    assert not (Path.cwd() / "pwned").exists()


def test_an_alias_bomb_is_refused_quickly() -> None:
    """Billion laughs: 3.4e9 values once expanded, a few hundred bytes as text."""
    start = time.monotonic()
    with pytest.raises(InvalidDataFile) as info:
        _load_text(_valid_cpu_yaml("x") + f"notes: {BILLION_LAUGHS}\n")
    assert "alias bomb" in _one_line(info.value)
    assert time.monotonic() - start < 5


def test_deep_nesting_is_refused_without_crashing() -> None:
    """libyaml's composer recurses in C: 100,000 levels crash the interpreter if they get there."""
    with pytest.raises(InvalidDataFile) as info:
        _load_text(_valid_cpu_yaml("x") + f"notes: {DEEP}\n")
    # ours, or PyYAML >= 6.0.4's own scanner limit, which fires first: one line either way
    assert re.search(r"nested deeper than|nesting depth", _one_line(info.value))


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(InvalidDataFile) as info:
        _load_text(_valid_cpu_yaml("x") + "notes: &a [*a]\n")
    assert "alias" in _one_line(info.value)


def test_a_huge_or_binary_file_is_refused() -> None:
    _user_profile("x", _valid_cpu_yaml("x") + "notes: '" + "x" * (2 << 20) + "'\n")
    with pytest.raises(InvalidDataFile) as info:
        load_profiles()
    assert "larger than" in _one_line(info.value)
    (config_dir() / "profiles" / "x.yaml").write_bytes(b"id: \xff\xfe\n")
    with pytest.raises(InvalidDataFile) as info:
        load_profiles()
    assert "UTF-8" in _one_line(info.value)


def _check_profile(profile: Profile) -> None:
    """What a validated profile guarantees downstream."""
    numbers = [profile.host_ram_gib, profile.cpu_bandwidth_gbps, profile.device_bandwidth_gbps()]
    if profile.price is not None:
        numbers.append(profile.price.usd_per_hour)
    assert all(math.isfinite(n) and n >= 0 for n in numbers)
    assert 0 <= profile.device_budget_bytes() <= 64 * 1024 * GIB
    assert ID_RE.match(profile.id)
    for text in (profile.name, profile.notes, profile.source):
        assert text.isprintable() and "{{" not in text


@given(mutated("profiles", SHIPPED))
def test_mutated_shipped_profiles_validate_or_fail_in_one_line(case: tuple[str, str]) -> None:
    stem, text = case
    try:
        profile = parse_yaml_model(text, Profile, f"{stem}.yaml")
    except InvalidDataFile as err:
        assert err.path == f"{stem}.yaml"
        _one_line(err)
    else:
        _check_profile(profile)


@given(random_document())
def test_random_documents_validate_or_fail_in_one_line(text: str) -> None:
    try:
        profile = parse_yaml_model(text, Profile, "r.yaml")
    except InvalidDataFile as err:
        _one_line(err)
    else:
        _check_profile(profile)


def test_detected_hardware_out_of_bounds_is_one_line() -> None:
    data = yaml.safe_load(_valid_cpu_yaml("detected-cpu"))
    data["name"] = "evil\x1b[2J cpu"
    with pytest.raises(InvalidDataFile) as info:
        validate_data(data, Profile, "the hardware detected")
    assert _one_line(info.value).startswith("the hardware detected: name: contains a control")


def test_a_profile_file_name_with_controls_is_one_line() -> None:
    _user_profile("bad\nname\x1b[2J", _valid_cpu_yaml("x"))
    with pytest.raises(InvalidDataFile) as info:
        load_profiles()
    assert "bad\\nname\\x1b[2J" in _one_line(info.value)
