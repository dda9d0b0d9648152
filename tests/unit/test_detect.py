"""Hardware detection from recorded tool outputs, and matching to profiles."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployer.cli.app import app
from deployer.core.hardware.detect import (
    ProbeResult,
    closest_profile,
    detect_hardware,
    detected_profile,
    estimate_cpu_bandwidth_gbps,
    match_profile,
    parse_amd_sysfs,
    parse_cpuinfo,
    parse_nvidia_smi,
    parse_rocm_smi,
    parse_sysctl,
    parse_system_profiler,
)
from deployer.core.hardware.profiles import Profile, load_profiles
from deployer.core.units import GIB, MIB

FIXTURES = Path(__file__).parent / "fixtures" / "detect"


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def profiles() -> dict[str, Profile]:
    return load_profiles()


def _linux(ram_gib: float, threads: int, **tools: str) -> ProbeResult:
    return ProbeResult(
        os_name="Linux",
        arch="x86_64",
        cpuinfo=_fixture("cpuinfo-epyc-avx512.txt"),
        cpu_cores=threads // 2 or 1,
        cpu_threads=threads,
        ram_bytes=int(ram_gib * GIB),
        **tools,  # type: ignore[arg-type]
    )


def _mac(ram_bytes: int | None = None) -> ProbeResult:
    sysctl = _fixture("sysctl-m2-ultra.txt")
    if ram_bytes is not None:
        sysctl = f"Apple M2 Ultra\n{ram_bytes}\n"
    return ProbeResult(
        os_name="Darwin",
        arch="arm64",
        sysctl=sysctl,
        system_profiler_json=_fixture("system_profiler-m2-ultra.json"),
        cpu_cores=24,
        cpu_threads=24,
        ram_bytes=ram_bytes or 206158430208,
    )


def test_parse_nvidia_smi_a10g() -> None:
    (gpu,) = parse_nvidia_smi(_fixture("nvidia-smi-a10g.csv"))
    assert (gpu.name, gpu.memory_bytes, gpu.compute_capability) == (
        "NVIDIA A10G",
        23028 * MIB,
        "8.6",
    )


def test_parse_nvidia_smi_8x_h100_and_old_driver() -> None:
    gpus = parse_nvidia_smi(_fixture("nvidia-smi-8x-h100.csv"))
    assert len(gpus) == 8
    assert {(g.name, g.memory_bytes, g.compute_capability) for g in gpus} == {
        ("NVIDIA H100 80GB HBM3", 81559 * MIB, "9.0")
    }
    (old,) = parse_nvidia_smi("Tesla T4, 15360\n")
    assert old.compute_capability is None
    (na,) = parse_nvidia_smi("Tesla T4, 15360, [N/A]\n")
    assert na.compute_capability is None
    assert parse_nvidia_smi("No devices were found\n") == []


def test_parse_rocm_smi_mi300x() -> None:
    gpus = parse_rocm_smi(_fixture("rocm-smi-8x-mi300x.json"))
    assert len(gpus) == 8
    assert gpus[0].name == "AMD Instinct MI300X"
    assert gpus[0].memory_bytes == 205822885888
    assert gpus[0].compute_capability == "gfx942"
    assert parse_rocm_smi("not json") == []


def test_parse_amd_sysfs_skips_apu_carveout() -> None:
    gpus = parse_amd_sysfs(("25753026560\n", "536870912\n", "garbage"))
    assert [g.memory_bytes for g in gpus] == [25753026560]


def test_parse_apple() -> None:
    assert parse_sysctl(_fixture("sysctl-m2-ultra.txt")) == ("Apple M2 Ultra", 192 * GIB)
    assert parse_system_profiler(_fixture("system_profiler-m2-ultra.json")) == (
        "Apple M2 Ultra",
        76,
    )


def test_parse_cpuinfo_epyc_avx512() -> None:
    cpu = parse_cpuinfo(_fixture("cpuinfo-epyc-avx512.txt"))
    assert cpu.model == "AMD EPYC"
    assert (cpu.cores, cpu.threads) == (2, 2)
    assert cpu.avx2 and cpu.avx512
    assert {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"} <= set(cpu.flags)


def test_parse_cpuinfo_arm() -> None:
    text = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n\nprocessor\t: 1\n"
    cpu = parse_cpuinfo(text)
    assert (cpu.threads, cpu.avx2, cpu.avx512) == (2, False, False)
    assert cpu.flags == ["neon", "dotprod", "i8mm"]


def test_a10g_matches_g5_exactly(profiles: dict[str, Profile]) -> None:
    hw = detect_hardware(_linux(15.4, 4, nvidia_csv=_fixture("nvidia-smi-a10g.csv")))
    assert hw.kind == "nvidia"
    found = match_profile(hw, profiles)
    assert (found.profile.id, found.match) == ("nvidia-a10g-24gb", "exact")
    assert closest_profile(hw, profiles)[0] == "nvidia-a10g-24gb"


def test_8x_h100_matches_p5(profiles: dict[str, Profile]) -> None:
    probe = _linux(2000, 192, nvidia_csv=_fixture("nvidia-smi-8x-h100.csv"))
    found = match_profile(detect_hardware(probe), profiles)
    assert (found.profile.id, found.match) == ("nvidia-8x-h100-80gb", "exact")
    assert detected_profile(probe, profiles) == profiles["nvidia-8x-h100-80gb"]


def test_rtx_4090_matches_and_takes_host_from_machine(profiles: dict[str, Profile]) -> None:
    csv = _fixture("nvidia-smi-rtx4090.csv")
    same = match_profile(detect_hardware(_linux(62.7, 32, nvidia_csv=csv)), profiles)
    assert (same.profile.id, same.match) == ("nvidia-rtx-4090-24gb", "exact")
    bigger = match_profile(detect_hardware(_linux(128, 24, nvidia_csv=csv)), profiles)
    assert (bigger.profile.id, bigger.match) == ("nvidia-rtx-4090-24gb", "closest")
    assert bigger.profile.host_ram_gib == 128 and bigger.profile.cpu_cores == 24
    assert "host RAM" in bigger.reason


def test_every_kind_of_match_carries_this_machines_disk_read_ahead(
    profiles: dict[str, Profile],
) -> None:
    """The read-around a mapped model needs room for is the machine's, whichever profile the
    machine matched: an exact CPU match (2 CPUs, 8 GiB: cpu-x86-2c-8gb), a GPU match, ad-hoc."""

    def read_ahead(probe: ProbeResult) -> tuple[str, int]:
        found = match_profile(detect_hardware(replace(probe, read_ahead_kb=("8192\n",))), profiles)
        return found.match, found.profile.disk_read_ahead_kb

    assert read_ahead(_linux(8, 2)) == ("exact", 8192)
    assert read_ahead(_linux(15.4, 4, nvidia_csv=_fixture("nvidia-smi-a10g.csv"))) == (
        "exact",
        8192,
    )
    assert read_ahead(_linux(24, 2)) == ("ad-hoc", 8192)
    # nothing read (no /sys/block, macOS): the profile's own, Linux's default
    assert match_profile(detect_hardware(_linux(8, 2)), profiles).profile.disk_read_ahead_kb == 128


def test_gpu_variant_is_closest(profiles: dict[str, Profile]) -> None:
    hw = detect_hardware(_linux(170, 12, nvidia_csv="NVIDIA A100 80GB PCIe, 81920, 8.0\n"))
    found = match_profile(hw, profiles)
    assert (found.profile.id, found.match) == ("nvidia-a100-80gb", "closest")
    assert "variant" in found.reason


def test_odd_gpu_count_is_adhoc_borrowing_bandwidth(profiles: dict[str, Profile]) -> None:
    csv = "NVIDIA A100-SXM4-80GB, 81920, 8.0\n" * 3
    found = match_profile(detect_hardware(_linux(500, 48, nvidia_csv=csv)), profiles)
    assert found.match == "ad-hoc"
    assert found.profile.id == "detected-nvidia-3x-a100-80gb"
    assert found.profile.gpu is not None
    assert (found.profile.gpu.count, found.profile.gpu.bandwidth_gbps) == (3, 2039)
    assert found.closest_shipped == "nvidia-2x-a100-80gb"
    assert closest_profile(detect_hardware(_linux(500, 48, nvidia_csv=csv)), profiles)[0] is None


def test_unknown_gpu_is_adhoc_with_assumed_bandwidth(profiles: dict[str, Profile]) -> None:
    hw = detect_hardware(_linux(64, 16, nvidia_csv="NVIDIA RTX A6000, 49140, 8.6\n"))
    found = match_profile(hw, profiles)
    assert found.match == "ad-hoc" and found.profile.id == "detected-nvidia-a6000-48gb"
    assert found.profile.gpu is not None and found.profile.gpu.bandwidth_gbps == 300
    assert "assumed" in found.profile.notes
    assert found.profile.runtimes["llamacpp"].image == "ghcr.io/ggml-org/llama.cpp:server-cuda"


def test_mi300x(profiles: dict[str, Profile]) -> None:
    one = detect_hardware(_linux(240, 20, rocm_json=_fixture("rocm-smi-mi300x.json")))
    assert one.kind == "amd"
    found = match_profile(one, profiles)
    assert (found.profile.id, found.match) == ("amd-mi300x-192gb", "exact")
    eight = detect_hardware(_linux(1800, 192, rocm_json=_fixture("rocm-smi-8x-mi300x.json")))
    adhoc = match_profile(eight, profiles)
    assert adhoc.match == "ad-hoc" and adhoc.profile.id == "detected-amd-8x-mi300x-192gb"
    assert adhoc.profile.gpu is not None and adhoc.profile.gpu.bandwidth_gbps == 5300
    assert adhoc.profile.runtimes["llamacpp"].image == "ghcr.io/ggml-org/llama.cpp:server-rocm"


def test_apple_m2_ultra(profiles: dict[str, Profile]) -> None:
    hw = detect_hardware(_mac())
    assert hw.kind == "apple" and hw.ram_bytes == 192 * GIB
    assert hw.gpus[0].name == "Apple M2 Ultra" and hw.gpus[0].cores == 76
    assert hw.cpu.model == "Apple M2 Ultra"
    found = match_profile(hw, profiles)
    assert (found.profile.id, found.match) == ("apple-m2-ultra-192gb", "exact")


def test_apple_other_ram_is_adhoc(profiles: dict[str, Profile]) -> None:
    found = match_profile(detect_hardware(_mac(64 * GIB)), profiles)
    assert found.match == "ad-hoc" and found.profile.id == "detected-apple-m2-ultra-64gb"
    assert found.profile.unified_memory is not None
    assert found.profile.unified_memory.gpu_wired_fraction == 0.75
    assert found.profile.cpu_bandwidth_gbps == 800
    assert all(spec.mode == "native" for spec in found.profile.runtimes.values())


def test_cpu_only_is_adhoc_with_closest_shipped(profiles: dict[str, Profile]) -> None:
    probe = _linux(23.54, 2)
    hw = detect_hardware(probe)
    assert hw.kind == "cpu" and hw.gpus == []
    found = match_profile(hw, profiles)
    assert found.match == "ad-hoc"
    assert found.profile.id == "detected-cpu-2c-24gb"
    assert found.profile.cpu_cores == 2 and found.profile.host_ram_gib == pytest.approx(23.54)
    assert found.profile.cpu_bandwidth_gbps == estimate_cpu_bandwidth_gbps(2) == 20
    assert found.profile.cpu_flags[:2] == ["avx", "avx2"]
    assert found.closest_shipped == "cpu-x86-2c-8gb"
    assert "cpu-x86-2c-8gb" in found.reason
    assert detected_profile(probe, profiles).id == "detected-cpu-2c-24gb"


def test_cpu_matching_shipped_shape_is_exact(profiles: dict[str, Profile]) -> None:
    found = match_profile(detect_hardware(_linux(62.5, 16)), profiles)
    assert (found.profile.id, found.match) == ("cpu-x86-16c-64gb", "exact")


def test_arm_cpu_has_no_x86_closest(profiles: dict[str, Profile]) -> None:
    probe = ProbeResult(
        os_name="Linux", arch="aarch64", cpuinfo="processor\t: 0\nFeatures\t: asimd\n",
        cpu_threads=4, ram_bytes=16 * GIB,
    )  # fmt: skip
    found = match_profile(detect_hardware(probe), profiles)
    assert found.match == "ad-hoc" and found.closest_shipped is None


def test_cli_detect_json(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = _linux(15.4, 4, nvidia_csv=_fixture("nvidia-smi-a10g.csv"))
    import deployer.adapters.system_probe as system_probe

    monkeypatch.setattr(system_probe, "probe_system", lambda: probe)
    result = CliRunner().invoke(app, ["detect", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kind"] == "nvidia"
    assert data["gpus"] == [
        {"name": "NVIDIA A10G", "memory_bytes": 23028 * MIB, "compute_capability": "8.6"}
    ]
    assert data["cpu"] == {
        "model": "AMD EPYC", "cores": 2, "threads": 4, "avx2": True, "avx512": True
    }  # fmt: skip
    assert data["ram_bytes"] == int(15.4 * GIB)
    assert (data["profile"], data["match"]) == ("nvidia-a10g-24gb", "exact")
    assert data["reason"]
    table = CliRunner().invoke(app, ["detect"], env={"COLUMNS": "200"})
    assert "nvidia-a10g-24gb (exact)" in table.stdout
