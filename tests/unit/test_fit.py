"""Memory fit: KV, placement and compute against numbers llama.cpp logged for other models."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from deployer.core.fit import memory
from deployer.core.fit.llamalog import parse_buffers
from deployer.core.fit.memory import (
    DEFAULT_READ_AHEAD_BYTES,
    GPU_RUNTIME_HOST_BYTES,
    DeviceMemory,
    FitSettings,
    MachineSpec,
    checkpoint_bytes,
    compute_bytes,
    cpu_work_bytes,
    estimate_memory,
    host_overhead_bytes,
    kv_bytes,
    kv_layer_bytes,
    offloaded_blocks,
    pad,
    page_table_bytes,
    readaround_bytes,
    split_layers,
)
from deployer.core.model.facts import ModelArch, ModelFacts, WeightLayout
from deployer.core.units import GIB, MIB


def _arch(**kw: object) -> ModelArch:
    base: dict[str, object] = dict(
        architecture="llama",
        n_layer=32,
        n_embd=4096,
        n_head=32,
        n_head_kv=[8] * 32,
        head_dim_k=128,
        head_dim_v=128,
        n_ff=14336,
        n_vocab=128256,
        ctx_train=131072,
    )
    base.update(kw)
    return ModelArch.model_validate(base)


def _facts(
    arch: ModelArch,
    block: int = 100 * MIB,
    embd: int = 280 * MIB,
    out: int = 400 * MIB,
    tied: bool = False,
) -> ModelFacts:
    layout = WeightLayout(
        file_bytes=embd + out + block * arch.n_layer,
        token_embd_bytes=embd,
        output_bytes=out,
        output_in_file=not tied,
        block_bytes=[block] * arch.n_layer,
        exact=True,
    )
    return ModelFacts(name="t", quant="Q4_K_M", arch=arch, weights=layout, source="test")


GPU = MachineSpec(
    kind="gpu",
    device_count=1,
    device_budget_bytes=80 * GIB,
    device_overhead_bytes=500 * MIB,
    host_budget_bytes=64 * GIB,
)


def test_llama31_8b_kv_is_128_kib_per_token() -> None:
    # fit_methods.md §1.1: 32 layers x 8 KV heads x 128 x (K+V) x 2 B; logged 16384 MiB at 131072.
    arch = _arch()
    assert kv_bytes(arch, range(32), FitSettings(ctx=8192)) == 1024 * MIB
    assert kv_bytes(arch, range(32), FitSettings(ctx=131072)) == 16384 * MIB


def test_without_flash_attention_every_layers_v_is_as_wide_as_the_widest() -> None:
    # llama_kv_cache stores V transposed without flash attention, each layer n_embd_v_gqa_max
    # wide: a model whose KV heads vary by layer (2 and 8 here) holds more V than its heads say.
    arch = _arch(n_layer=2, n_head_kv=[2, 8])
    row = 128 * 2  # f16 bytes of one head's K or V row
    fa = kv_bytes(arch, range(2), FitSettings(ctx=4096))
    no_fa = kv_bytes(arch, range(2), FitSettings(ctx=4096, flash_attention=False))
    assert fa == 4096 * row * (2 + 2 + 8 + 8)
    assert no_fa == 4096 * row * (2 + 8 + 8 + 8)
    uniform = _arch(n_layer=2, n_head_kv=[8, 8])
    assert kv_bytes(uniform, range(2), FitSettings(ctx=4096, flash_attention=False)) == kv_bytes(
        uniform, range(2), FitSettings(ctx=4096)
    )


def test_the_graph_spans_a_whole_ubatch_even_when_a_slot_has_fewer_cells() -> None:
    # llama_context reserves its graph for min(n_ctx, n_ubatch) tokens over all streams; at ctx
    # 1024 with four slots a stream has 256 cells, and the ubatch is still 512 tokens
    # (benchmarks/compute_probe.py --ctx 1024 --parallel 4 logged 70.51 MiB for the two-layer
    # Llama 3.2 1B variant without flash attention; counting 256 tokens gave 35.27).
    arch = _arch(n_layer=2, n_embd=2048, n_head=32, n_head_kv=[8, 8], head_dim_k=64,
                 head_dim_v=64, n_ff=8192, n_vocab=32000)  # fmt: skip
    s = FitSettings(ctx=1024, parallel=4, n_ubatch=512, flash_attention=False)
    assert s.cells_per_stream == 256
    assert compute_bytes(arch, s) / MIB == pytest.approx(70.51, abs=0.1)
    assert compute_bytes(arch, replace(s, n_ubatch=256)) < compute_bytes(arch, s)


def test_q8_0_kv_is_34_of_64_of_f16() -> None:
    arch = _arch()
    f16 = kv_bytes(arch, range(32), FitSettings(ctx=32768))
    q8 = kv_bytes(arch, range(32), FitSettings(ctx=32768, kv_type_k="q8_0", kv_type_v="q8_0"))
    assert q8 * 1024 == f16 * 544


def test_gemma3_4b_swa_matches_logged_metal_buffers() -> None:
    # gemma-3-4b: 34 layers, 5 global / 29 SWA (window 1024), 4 KV heads x 256.
    # Logged: 160 MiB (8192 cells, 5 layers) + 174 MiB (1536 cells, 29 layers) at ctx 8192.
    swa = [(i + 1) % 6 != 0 for i in range(34)]
    arch = _arch(
        n_layer=34,
        n_embd=2560,
        n_head=8,
        n_head_kv=[4] * 34,
        head_dim_k=256,
        head_dim_v=256,
        sliding_window=1024,
        swa_layers=swa,
        n_vocab=262144,
    )
    assert kv_bytes(arch, range(34), FitSettings(ctx=8192)) == 334 * MIB
    assert kv_bytes(arch, range(34), FitSettings(ctx=131072)) == (2560 + 174) * MIB


def test_slots_split_cells_per_stream_and_pad_each() -> None:
    s = FitSettings(ctx=10000, parallel=3)
    assert s.cells_per_stream == pad(pad(10000, 256) // 3, 256)
    assert s.kv_cells == s.cells_per_stream * 3
    ollama = FitSettings(ctx=4096, parallel=4, ctx_is_per_slot=True)
    assert ollama.kv_cells == 16384


def test_mla_caches_latent_only() -> None:
    """An MLA file (key_length_mla stated) holds one K head of latent + rope per cell, no V,
    with or without flash attention."""
    arch = _arch(n_layer=2, n_head_kv=[1, 1], head_dim_k=576, head_dim_v=512, kv_lora_rank=512,
                 n_rot=64, mla=True)  # fmt: skip
    for fa in (True, False):
        got = kv_bytes(arch, range(2), FitSettings(ctx=4096, flash_attention=fa))
        assert got == 2 * 4096 * 576 * 2


def test_deepseek_file_without_mla_keys_caches_every_head() -> None:
    """A DeepSeek file converted before the MLA cache states kv_lora_rank but not
    key_length_mla: llama.cpp caches per-head K (192) and V (128), 70x the latent."""
    arch = _arch(n_layer=2, n_head_kv=[128, 128], head_dim_k=192, head_dim_v=128,
                 kv_lora_rank=512, n_rot=64)  # fmt: skip
    got = kv_bytes(arch, range(2), FitSettings(ctx=4096))
    assert got == 2 * 4096 * 128 * (192 + 128) * 2


def test_indexer_cache_spans_the_context_beside_the_main_cache() -> None:
    """DeepSeek 3.2: an indexer key head per cell on the indexer layers, over the whole
    context, K only (and K's type); MiniMax-M3's indexer also holds a V row."""
    arch = _arch(n_layer=3, n_head_kv=[1] * 3, head_dim_k=576, head_dim_v=512, kv_lora_rank=512,
                 n_rot=64, mla=True, indexer_k=128,
                 indexer_layers=[True, False, True])  # fmt: skip
    s = FitSettings(ctx=4096, parallel=2, kv_type_k="q8_0", kv_type_v="q8_0")
    latent = 4096 * 576 * 34 / 32
    assert kv_bytes(arch, [1], s) == int(latent)
    assert kv_bytes(arch, [0], s) == int(latent) + int(4096 * 128 * 34 / 32)
    # a checkpoint's share is of the main cache only
    assert kv_layer_bytes(arch, 0, s, 100) == int(100 * 576 * 34 / 32)
    with_v = arch.model_copy(update={"mla": False, "indexer_v": 64, "n_head_kv": [2] * 3,
                                     "head_dim_k": 64, "head_dim_v": 64})  # fmt: skip
    f16 = FitSettings(ctx=4096)
    assert kv_bytes(with_v, [2], f16) == 4096 * (2 * 64 + 2 * 64) * 2 + 4096 * (128 + 64) * 2


def test_quantized_kv_adds_to_the_sparse_attention_compute() -> None:
    """The quantized-KV row buffer adds to the indexer's, hyper-connections' and compressed
    rows' compute terms; it once replaced them (400 MiB under at ctx 131072)."""
    arch = _arch(n_layer=2, n_head_kv=[1, 1], head_dim_k=576, head_dim_v=512, mla=True,
                 kv_lora_rank=512, n_rot=64, indexer_k=128, indexer_q=64 * 128,
                 indexer_top_k=2048, indexer_layers=[True, True],
                 hyper_connections=4)  # fmt: skip
    f16 = compute_bytes(arch, FitSettings(ctx=131072))
    q8 = compute_bytes(arch, FitSettings(ctx=131072, kv_type_k="q8_0", kv_type_v="q8_0"))
    assert q8 == f16 + 4 * 512 * 576


def test_a_parallel_block_keeps_the_attention_output_beside_the_feed_forward() -> None:
    """Command R7B's block adds attention and feed-forward to its input at the end: with flash
    attention the feed-forward half is the larger, and one n_embd-wide row more is alive in it
    than in a block that adds the attention in first (8 MiB at ubatch 512 on the full-size
    shape, where the plan was that much under llama-server's log)."""
    s = FitSettings(ctx=4096)
    sequential = compute_bytes(_arch(architecture="llama"), s)
    for name in ("cohere2", "command-r", "phi2", "falcon", "plamo", "gptneox"):
        assert compute_bytes(_arch(architecture=name), s) == sequential + 4 * 512 * 4096, name
    # without flash attention the attention half (its KQ matrix) is the larger: no change
    off = FitSettings(ctx=4096, flash_attention=False)
    assert compute_bytes(_arch(architecture="cohere2"), off) == compute_bytes(_arch(), off)


def test_deepseek4_caches_a_window_and_compressed_rows() -> None:
    """DeepSeek 4: a K-only window per sequence on every layer; a row per 4 tokens (and the
    indexer's keys) or per 128 on the compressing layers, with their compressors' f32 state;
    per sequence even when the cache is unified. The same rows llama-server logs on a small
    file (test_fit_architectures.py)."""
    arch = _arch(n_layer=3, n_head_kv=[1] * 3, head_dim_k=64, head_dim_v=64, sliding_window=128,
                 swa_layers=[True] * 3, indexer_k=128,
                 compress_ratios=[0, 4, 128])  # fmt: skip
    s = FitSettings(ctx=8192, parallel=2)
    window = 768 * 64 * 2  # pad(128 + 512, 256) cells of one 64-wide K head
    assert kv_bytes(arch, [0], s) == 2 * window
    csa_state = 2 * 4 * (8 * 128 + 8 * 256)
    assert kv_bytes(arch, [1], s) == 2 * (window + 1024 * (64 + 128) * 2 + csa_state)
    assert kv_bytes(arch, [2], s) == 2 * (window + 256 * 64 * 2 + 2 * 4 * 128 * 64)
    # the compressors' state is checkpointed with the window
    one = replace(s, parallel=1)
    assert checkpoint_bytes(arch, one) == 3 * (3 * 128 * 64 * 2 + csa_state + 2 * 4 * 128 * 64)


def test_dsv4_state_lines_are_read_as_recurrent_state() -> None:
    log = (
        "llama_kv_cache:        CPU KV buffer size =     0.75 MiB\n"
        "llama_dsv4_comp_state:        CPU DSV4 csa state buffer size =     0.03 MiB\n"
        "llama_dsv4_comp_state:      CUDA0 DSV4 hca state buffer size =     0.12 MiB\n"
    )
    logged = parse_buffers(log)
    assert logged.get("host", "RS") == round(0.03 * MIB)
    assert logged.get("CUDA0", "RS") == round(0.12 * MIB)
    assert logged.cache("host") == round(0.75 * MIB) + round(0.03 * MIB)


def test_ngl_offloads_output_first() -> None:
    assert offloaded_blocks(32, 0) == ([], False)
    assert offloaded_blocks(32, 1) == ([], True)
    assert offloaded_blocks(32, 3) == ([30, 31], True)
    assert offloaded_blocks(32, 33) == (list(range(32)), True)
    assert offloaded_blocks(32, 99) == (list(range(32)), True)


def test_kv_of_windowed_head_sizes_and_shared_caches() -> None:
    """Gemma 4's shape: windowed layers with 256-wide heads, full ones 512, and the last four
    layers reusing earlier caches (llama_kv_cache skips a layer without has_kv). Flash
    attention stores each layer at its own width; without it V is transposed and every layer
    is as wide as the widest (n_embd_v_gqa_max)."""
    pattern = [True, True, True, True, True, False] * 2
    arch = _arch(
        architecture="gemma4", n_layer=12, n_head_kv=[2] * 12, head_dim_k=512, head_dim_v=512,
        head_dim_k_swa=256, head_dim_v_swa=256, sliding_window=1024, swa_layers=pattern,
        kv_layers=8,
    )  # fmt: skip
    s = FitSettings(ctx=8192)
    full, window = 8192, pad(1024 + s.n_ubatch, 256)
    owned = range(8)  # layers 0-7: 5 windowed (0-4), 1 full (5), 2 windowed (6, 7)
    want = sum(
        (full * 2 * 512 * 2 * 2) if not pattern[i] else (window * 2 * 256 * 2 * 2) for i in owned
    )
    assert kv_bytes(arch, range(12), s) == want
    no_fa = FitSettings(ctx=8192, flash_attention=False)
    want_no_fa = sum(
        (full if not pattern[i] else window) * 2 * (2 * (512 if not pattern[i] else 256) + 2 * 512)
        for i in owned
    )
    assert kv_bytes(arch, range(12), no_fa) == want_no_fa
    # as if every layer owned a cache at the full layers' head size: what the plan used to say
    plain = _arch(architecture="gemma4", n_layer=12, n_head_kv=[2] * 12, head_dim_k=512,
                  head_dim_v=512, sliding_window=1024, swa_layers=pattern)  # fmt: skip
    assert kv_bytes(plain, range(12), s) > 1.5 * want


def test_an_attention_free_layer_still_holds_a_transposed_v_without_flash_attention() -> None:
    """DeciLM-style layers with 0 KV heads in a model with no recurrent state: llama_kv_cache
    gives every layer a cache, and without flash attention V is stored as wide as the widest
    layer's (n_embd_v_gqa_max), K empty. With flash attention such a layer holds nothing; in a
    hybrid its state is counted apart and it holds no cells."""
    arch = _arch(n_layer=4, n_head_kv=[8, 0, 8, 0])
    on, off = FitSettings(ctx=4096), FitSettings(ctx=4096, flash_attention=False)
    cells = 4096
    assert kv_bytes(arch, [1], on) == 0
    assert kv_bytes(arch, [1], off) == cells * 8 * 128 * 2
    assert kv_bytes(arch, range(4), off) == 2 * cells * 8 * 128 * 2 * 2 + 2 * cells * 8 * 128 * 2
    hybrid = _arch(n_layer=4, n_head_kv=[8, 0, 8, 0], recurrent_state_bytes_per_seq=1 << 20)
    assert kv_bytes(hybrid, [1], off) == 0


def test_the_graph_is_sized_by_the_widest_layer() -> None:
    """Compute and V-index inputs take the widest layer: Gemma 4's full layers have 512-wide
    heads where the windowed ones have 256."""
    pattern = [True] * 5 + [False]
    wide = _arch(architecture="gemma4", n_layer=6, n_head_kv=[2] * 6, head_dim_k=512,
                 head_dim_v=512, head_dim_k_swa=256, head_dim_v_swa=256, sliding_window=1024,
                 swa_layers=pattern)  # fmt: skip
    narrow = _arch(architecture="gemma4", n_layer=6, n_head_kv=[2] * 6, head_dim_k=256,
                   head_dim_v=256, sliding_window=1024, swa_layers=pattern)  # fmt: skip
    off = FitSettings(ctx=4096, flash_attention=False)
    # the V-cache indices: 8 B a token per V element of the widest layer, two caches
    assert memory._v_index_bytes(wide, off) == 8 * 512 * 2 * 512 * 2
    assert memory._v_index_bytes(narrow, off) == 8 * 512 * 2 * 256 * 2
    on = FitSettings(ctx=4096)
    assert compute_bytes(wide, on) > compute_bytes(narrow, on)
    # a query row is heads x the largest head size, whichever kind of layer has it
    swa_wide = narrow.model_copy(update={"head_dim_k_swa": 512, "head_dim_v_swa": 512})
    assert compute_bytes(swa_wide, on) > compute_bytes(narrow, on)
    assert memory._v_index_bytes(swa_wide, off) == memory._v_index_bytes(wide, off)


def test_a_partial_offload_keeps_each_recurrent_state_with_its_layer() -> None:
    """llama.cpp keeps each layer's state on the device that runs the layer: with Qwen3.5's
    layout (every 4th layer attention) and only the last block offloaded, the host runs all
    the delta nets and holds their whole state, not 7/8 of it."""
    arch = _arch(n_layer=8, n_head_kv=[0, 0, 0, 8] * 2, recurrent_state_bytes_per_seq=6 * MIB,
                 recurrent_layers=[True, True, True, False] * 2)  # fmt: skip
    s = FitSettings(ctx=4096, n_gpu_layers=2)  # the output layer and block 7
    est = estimate_memory(_facts(arch), s, GPU)
    kv_host = kv_bytes(arch, range(7), s)
    assert est.host.kv_cache_bytes == kv_host + 6 * MIB
    assert est.devices[0].kv_cache_bytes == kv_bytes(arch, [7], s)


def test_a_delta_attention_layer_of_an_mla_hybrid_holds_no_latent() -> None:
    """Kimi Linear/K3: MLA on the attention layers, delta attention (0 KV heads, a state) on
    the others, which hold no latent cache."""
    arch = _arch(n_layer=4, n_head_kv=[0, 0, 0, 1], head_dim_k=576, head_dim_v=512,
                 kv_lora_rank=512, n_rot=64, mla=True,
                 recurrent_state_bytes_per_seq=MIB)  # fmt: skip
    s = FitSettings(ctx=4096)
    assert kv_bytes(arch, range(4), s) == 4096 * (512 + 64) * 2


def test_per_layer_embeddings_stay_on_the_host_read_a_row_a_token() -> None:
    """Gemma 3n's per-layer embedding table is an input layer (GET_ROWS): llama.cpp keeps it
    on the CPU whatever -ngl says; mapped, it is looked up a row a token, like token_embd. It
    used to go with the output layer, onto the GPU."""
    base = _facts(_arch(), tied=True)
    ple = 2 * GIB
    layout = base.weights.model_copy(
        update={"input_bytes": ple, "file_bytes": base.weights.file_bytes + ple}
    )
    facts = base.model_copy(update={"weights": layout})
    on_gpu = estimate_memory(facts, FitSettings(ctx=4096, n_gpu_layers=99), GPU)
    without = estimate_memory(base, FitSettings(ctx=4096, n_gpu_layers=99), GPU)
    assert on_gpu.devices[0].weights_bytes == without.devices[0].weights_bytes
    assert on_gpu.host.logged_weights_bytes == without.host.logged_weights_bytes + ple
    assert on_gpu.host.weights_bytes == without.host.weights_bytes  # mapped: not held
    # its lookup's f32 rows, every layer's, are staged on the host for the GPU
    wide = facts.model_copy(update={"arch": facts.arch.model_copy(
        update={"n_embd_input_extra": 35 * 256})})  # fmt: skip
    staged = estimate_memory(wide, FitSettings(ctx=4096, n_gpu_layers=99), GPU).host
    assert staged.compute_bytes == on_gpu.host.compute_bytes + 4 * 35 * 256 * 512
    loaded = FitSettings(ctx=4096, n_gpu_layers=99, load_mode="none")
    held = estimate_memory(facts, loaded, GPU).host.weights_bytes
    assert held == estimate_memory(base, loaded, GPU).host.weights_bytes + ple


def test_full_offload_untied_keeps_embeddings_on_host() -> None:
    facts = _facts(_arch())
    est = estimate_memory(facts, FitSettings(ctx=8192, n_gpu_layers=33), GPU)
    dev = est.devices[0]
    assert dev.weights_bytes == 32 * 100 * MIB + 400 * MIB
    # untied token_embd stays on the host, mapped and logged, but read a row a token: not held
    # with a GPU either (docs/fit.md); the CUDA/ROCm runtime gets its own host allowance
    assert est.host.logged_weights_bytes == est.cold_weights_bytes == 280 * MIB
    assert est.host.weights_bytes == 0
    assert dev.kv_cache_bytes == 1024 * MIB
    assert dev.overhead_bytes == 500 * MIB
    assert est.host.kv_cache_bytes == 0
    process = host_overhead_bytes(facts.arch, GPU.cpu_threads)
    assert est.host.overhead_bytes >= process + GPU_RUNTIME_HOST_BYTES
    on_apple = replace(GPU, kind="apple")
    apple = estimate_memory(facts, FitSettings(ctx=8192, n_gpu_layers=33), on_apple)
    assert apple.host.overhead_bytes < process + GPU_RUNTIME_HOST_BYTES  # CUDA/ROCm only
    assert apple.host.weights_bytes == 280 * MIB  # on Apple token_embd stays counted
    loaded = estimate_memory(facts, FitSettings(ctx=8192, n_gpu_layers=33, load_mode="none"), GPU)
    assert loaded.host.weights_bytes == 280 * MIB and loaded.cold_weights_bytes == 0


def test_a_mapped_gpu_load_counts_the_page_tables_of_what_it_uploads() -> None:
    """llama.cpp uploads each offloaded tensor from the mapping, so the host holds a page-table
    entry per offloaded 4 KiB page until the loader unmaps those ranges; a load into buffers
    (--no-mmap) maps nothing."""
    facts = _facts(_arch())

    def host(ngl: int, **kw: Any) -> DeviceMemory:
        return estimate_memory(facts, FitSettings(ctx=8192, n_gpu_layers=ngl, **kw), GPU).host

    def touched(h: DeviceMemory) -> int:  # what the host's own entries are counted for
        return page_table_bytes(h.total_bytes - h.overhead_bytes)

    offloaded = 32 * 100 * MIB + 400 * MIB  # every block and the output layer
    mapped, read = host(33), host(33, load_mode="none")
    extra = mapped.overhead_bytes - touched(mapped) - (read.overhead_bytes - touched(read))
    assert extra == offloaded // 512
    # half the blocks on the GPU: half the blocks' entries
    half, half_read = host(17), host(17, load_mode="none")
    half_extra = (half.overhead_bytes - touched(half) - readaround_bytes(facts.weights, GPU, 16)
                  - (half_read.overhead_bytes - touched(half_read)))  # fmt: skip
    assert half_extra == (16 * 100 * MIB + 400 * MIB) // 512
    ollama = host(33, ctx_is_per_slot=True)
    ollama_read = host(33, ctx_is_per_slot=True, load_mode="none")
    window = readaround_bytes(facts.weights, GPU, 0)  # ollama counts token_embd as held
    assert ollama.overhead_bytes - touched(ollama) - window == (
        ollama_read.overhead_bytes - touched(ollama_read) + offloaded // 512
    )  # counted under Ollama too: its llama.cpp runner may map the file


def test_tied_embeddings_need_a_device_copy() -> None:
    facts = _facts(_arch(tied_embeddings=True), out=280 * MIB, tied=True)
    est = estimate_memory(facts, FitSettings(ctx=4096, n_gpu_layers=33), GPU)
    assert est.devices[0].weights_bytes == 32 * 100 * MIB + 280 * MIB
    # the host's copy is logged; the output layer multiplies by the device's, so the host only
    # looks up a row a token: mapped, not held
    assert est.host.logged_weights_bytes == 280 * MIB and est.host.weights_bytes == 0
    # with the output layer on the host (-ngl 0; llama.cpp offloads the output layer first) the
    # host multiplies by it: hot, held
    kept = estimate_memory(facts, FitSettings(ctx=4096, n_gpu_layers=0), GPU)
    assert kept.cold_weights_bytes == 0
    assert kept.host.weights_bytes == 280 * MIB + 32 * 100 * MIB


def test_partial_offload_moves_kv_and_grows_compute() -> None:
    facts = _facts(_arch())
    full = estimate_memory(facts, FitSettings(ctx=8192, n_gpu_layers=33), GPU)
    part = estimate_memory(facts, FitSettings(ctx=8192, n_gpu_layers=11), GPU)
    assert part.devices[0].layers == 11
    assert part.host.layers == 22
    assert part.devices[0].kv_cache_bytes == 10 * 32 * MIB
    assert part.host.kv_cache_bytes == 22 * 32 * MIB
    assert part.devices[0].compute_bytes > full.devices[0].compute_bytes


def test_two_gpus_split_layers_and_last_holds_output() -> None:
    two = MachineSpec(
        kind="gpu",
        device_count=2,
        device_budget_bytes=40 * GIB,
        device_overhead_bytes=500 * MIB,
        host_budget_bytes=64 * GIB,
    )
    est = estimate_memory(_facts(_arch()), FitSettings(ctx=8192, n_gpu_layers=33), two)
    a, b = est.devices
    assert a.layers == 16 and b.layers == 17
    assert b.weights_bytes - a.weights_bytes == 400 * MIB
    assert split_layers(list(range(5)), 2) == [[0, 1], [2, 3, 4]]


def test_no_flash_attention_costs_kq_matrix() -> None:
    facts = _facts(_arch())
    fa = estimate_memory(facts, FitSettings(ctx=32768, n_gpu_layers=33), GPU)
    nofa = estimate_memory(
        facts, FitSettings(ctx=32768, n_gpu_layers=33, flash_attention=False), GPU
    )
    extra = nofa.devices[0].compute_bytes - fa.devices[0].compute_bytes
    # f32 KQ for n_head heads over 32768 cells x 512 tokens = 2 GiB, dwarfing everything else:
    # the buffer holds it beside the attention half's rows (the feed-forward half is smaller).
    assert nofa.devices[0].compute_bytes >= 2 * GIB
    assert extra >= 2 * GIB - 64 * MIB
    assert fa.devices[0].compute_bytes < 512 * MIB


@pytest.mark.parametrize("ctx", [512, 4096, 65536])
def test_cpu_only_puts_everything_on_host(ctx: int) -> None:
    cpu = MachineSpec(
        kind="cpu",
        device_count=0,
        device_budget_bytes=0,
        device_overhead_bytes=0,
        host_budget_bytes=64 * GIB,
    )
    facts = _facts(_arch())
    est = estimate_memory(facts, FitSettings(ctx=ctx, n_gpu_layers=33), cpu)
    assert est.devices == []
    assert est.n_gpu_layers == 0
    assert est.host.logged_weights_bytes == facts.weights.tensor_bytes
    assert est.host.weights_bytes == facts.weights.tensor_bytes - facts.weights.token_embd_bytes
    assert est.host.kv_cache_bytes == kv_bytes(facts.arch, range(32), FitSettings(ctx=ctx))


# --- how weights are held: logged buffers vs the resident working set ------------------------

CPU = MachineSpec(
    kind="cpu", device_count=0, device_budget_bytes=0, device_overhead_bytes=0,
    host_budget_bytes=64 * GIB, cpu_threads=2,
)  # fmt: skip
REPACK = 60 * MIB  # per block: the Q4_K matmul weights the x86 CPU backend repacks


def test_a_tied_q4_table_is_held_beside_its_repacked_output_copy() -> None:
    """A tied token_embd of a repacked type: the CPU backend repacks its duplicate as the
    output. Read into a buffer the table and the copy are both held; mapped, the table is only
    looked up, which leaves one copy's worth; an untied Q4 output is one more repacked tensor
    (test_fit_architectures.py checks the logged figures against llama-server)."""
    tied = _facts(_arch(), tied=True)
    e = tied.weights.token_embd_bytes
    q4 = tied.model_copy(update={"weights": tied.weights.model_copy(
        update={"output_repack_bytes": e})})  # fmt: skip
    for mode, extra in (("none", e), ("mmap", 0), ("mmap+mlock", e)):
        s = FitSettings(ctx=4096, load_mode=mode)
        base, got = estimate_memory(tied, s, CPU).host, estimate_memory(q4, s, CPU).host
        assert got.weights_bytes == base.weights_bytes + extra, mode
        assert got.logged_weights_bytes == base.logged_weights_bytes + e, mode
    on_gpu = FitSettings(ctx=4096, n_gpu_layers=99)
    assert estimate_memory(q4, on_gpu, GPU).host.weights_bytes == (
        estimate_memory(tied, on_gpu, GPU).host.weights_bytes
    )


def _repacking_facts() -> ModelFacts:
    facts = _facts(_arch())
    layout = facts.weights.model_copy(update={"cpu_repack_bytes": [REPACK] * 32})
    return facts.model_copy(update={"weights": layout})


@pytest.mark.parametrize(
    ("mode", "logged_extra", "resident_extra"),
    [
        # the log counts the mapping and the copies; the mapped sources are reclaimable
        ("mmap", 32 * REPACK, 0),
        # anonymous buffers: a repacked tensor lives only in its copy
        ("none", 0, 0),
        ("mlock", 0, 0),
        ("dio", 0, 0),
        # the lock pins the mapping, repacked sources included: really twice
        ("mmap+mlock", 32 * REPACK, 32 * REPACK),
    ],
)
def test_cpu_weights_by_load_mode(mode: str, logged_extra: int, resident_extra: int) -> None:
    facts = _repacking_facts()
    host = estimate_memory(facts, FitSettings(ctx=4096, load_mode=mode), CPU).host
    tensors = facts.weights.tensor_bytes
    # mapped, the untied token_embd is looked up a row at a time: not held
    held = tensors - (facts.weights.token_embd_bytes if mode == "mmap" else 0)
    assert host.logged_weights_bytes == tensors + logged_extra
    assert host.weights_bytes == held + resident_extra
    assert host.repack_bytes == 32 * REPACK
    assert host.weights_held == mode
    assert host.logged_buffers_bytes == (
        host.logged_weights_bytes + host.kv_cache_bytes + host.compute_bytes + host.output_bytes
    )
    assert (
        host.total_bytes
        == host.logged_buffers_bytes
        - logged_extra
        + resident_extra
        - (tensors - held)
        + host.overhead_bytes
    )


@pytest.mark.parametrize(("mode", "slack"), [("mmap", 0), ("none", 0),
                                              ("mmap+mlock", 0)])  # fmt: skip
def test_the_host_counts_page_tables_and_room_to_reclaim_a_mapping(mode: str, slack: int) -> None:
    facts = _repacking_facts()
    host = estimate_memory(facts, FitSettings(ctx=4096, load_mode=mode), CPU).host
    touched = host.total_bytes - host.overhead_bytes
    if mode == "mmap":  # and room for the cold pages the kernel reads around the hot ones
        slack += facts.weights.readaround_bytes(DEFAULT_READ_AHEAD_BYTES)
    work = cpu_work_bytes(_arch(), FitSettings(ctx=4096))  # the CPU's work buffer
    assert host.overhead_bytes == host_overhead_bytes(_arch(), 2) + work + touched // 512 + slack
    assert page_table_bytes(8 * GIB) == 16 * MIB


def test_default_and_auto_load_modes_are_mmap() -> None:
    facts = _repacking_facts()
    default = estimate_memory(facts, FitSettings(ctx=4096), CPU).host
    auto = estimate_memory(facts, FitSettings(ctx=4096, load_mode="auto"), CPU).host
    assert default.weights_held == auto.weights_held == "mmap"
    held = facts.weights.tensor_bytes - facts.weights.token_embd_bytes  # token_embd untied
    assert default.weights_bytes == auto.weights_bytes == held


@pytest.mark.parametrize("mode", ["mmap", "none", "mlock", "mmap+mlock"])
def test_full_gpu_offload_host_holds_only_its_tensors_whatever_the_mode(mode: str) -> None:
    """Offloaded tensors' mapped pages are read once and reclaimable: never on the host."""
    facts = _repacking_facts()
    est = estimate_memory(facts, FitSettings(ctx=4096, n_gpu_layers=33, load_mode=mode), GPU)
    # token_embd: logged whatever the mode; held unless mapped (read a row a token), as on CPU
    assert est.host.logged_weights_bytes == 280 * MIB
    assert est.host.weights_bytes == (0 if mode == "mmap" else 280 * MIB)
    assert est.host.repack_bytes == 0  # repacking is the CPU backend's, on CPU profiles
    assert est.devices[0].weights_bytes == est.devices[0].logged_weights_bytes


@pytest.mark.parametrize(
    ("mode", "host_blocks_held"), [("mmap", 10), ("none", 10), ("mmap+mlock", 10)]
)
def test_partial_offload_host_side_follows_the_same_rules(mode: str, host_blocks_held: int) -> None:
    facts = _repacking_facts()
    est = estimate_memory(facts, FitSettings(ctx=4096, n_gpu_layers=23, load_mode=mode), GPU)
    assert est.host.layers == host_blocks_held
    embd = 0 if mode == "mmap" else 280 * MIB  # a mapped untied token_embd is not held
    assert est.host.weights_bytes == embd + host_blocks_held * 100 * MIB
    assert est.devices[0].weights_bytes == 22 * 100 * MIB + 400 * MIB


def test_unknown_load_mode_is_refused_by_the_planner() -> None:
    from deployer.core.errors import InvalidRequest
    from deployer.core.fit.plan import PlanRequest, make_plan
    from deployer.core.hardware.profiles import get_profile

    with pytest.raises(InvalidRequest, match="unknown load mode 'mmapp'"):
        make_plan("t", [_facts(_arch())], get_profile("cpu-x86-2c-8gb"), PlanRequest(
            load_mode="mmapp"))  # fmt: skip


def test_host_overhead_follows_vocabulary_and_threads() -> None:
    from deployer.core.fit.memory import host_overhead_bytes

    small, big = _arch(n_vocab=32000), _arch(n_vocab=262144)
    assert host_overhead_bytes(big, 2) > host_overhead_bytes(small, 2)
    assert host_overhead_bytes(small, 32) > host_overhead_bytes(small, 2)
    # A BPE tokenizer's merge table is held beside the vocabulary.
    merged = small.model_copy(update={"n_merges": 280147})
    assert host_overhead_bytes(merged, 2) - host_overhead_bytes(small, 2) >= 280147 * 100


def test_host_overhead_covers_every_process_measured_after_a_long_prompt() -> None:
    # benchmarks/host_overhead.py: RssAnon beyond the logged buffers once a prompt filled a
    # ubatch, plus RssFile (binary and libraries), per model; the budget must hold each.
    import json

    from deployer.core.fit.memory import host_overhead_bytes

    results = Path(__file__).resolve().parents[2] / "benchmarks/results"
    doc = json.loads((results / "host_overhead.json").read_text())
    assert len(doc["rows"]) >= 8
    # The same shapes with their real byte-level BPE tokenizers (kind, merge count) beside the
    # placeholder vocabulary, measured back to back.
    bpe = json.loads((results / "host_overhead_bpe.json").read_text())
    assert sum(r["n_merges"] > 0 for r in bpe["rows"]) >= 3
    for d in (doc, bpe):
        for row in d["rows"]:
            needed = (row["anon_beyond_buffers_mib"] + row["file_peak_mib"]) * MIB
            arch = _arch(n_vocab=row["n_vocab"]).model_copy(
                update={"n_merges": row.get("n_merges", 0)}
            )
            assert host_overhead_bytes(arch, d["threads"]) >= needed, row


def test_without_flash_attention_the_cpu_copies_kq_as_f16() -> None:
    # ggml-cpu converts the softmaxed KQ (cells x ubatch x heads, f32) to f16 in its work
    # buffer to multiply it by the V cache: outside every logged buffer. Only the excess over
    # the feed-forward conversion (in the measured overhead) is added.
    arch = _arch()
    fa = FitSettings(ctx=8192, flash_attention=True)
    no_fa = FitSettings(ctx=8192, flash_attention=False)
    assert cpu_work_bytes(arch, fa) == 0
    kq = 2 * no_fa.cells_per_stream * no_fa.n_ubatch * arch.n_head
    assert cpu_work_bytes(arch, no_fa) == kq - no_fa.n_ubatch * arch.n_ff * 34 // 32
    # It grows with the cells a stream holds; an f32 V cache is multiplied without a copy.
    more = FitSettings(ctx=16384, flash_attention=False)
    assert cpu_work_bytes(arch, more) > cpu_work_bytes(arch, no_fa)
    f32 = FitSettings(ctx=8192, flash_attention=False, kv_type_k="f32", kv_type_v="f32")
    assert cpu_work_bytes(arch, f32) == 0
    cpu = MachineSpec(kind="cpu", device_count=0, device_budget_bytes=0,
                      device_overhead_bytes=0, host_budget_bytes=64 * GIB, cpu_threads=2)  # fmt: skip
    facts = _facts(arch)
    with_fa = estimate_memory(facts, fa, cpu).host.overhead_bytes
    without = estimate_memory(facts, no_fa, cpu).host.overhead_bytes
    assert without - with_fa >= cpu_work_bytes(arch, no_fa)


def test_context_checkpoints_hold_the_sliding_window_per_slot() -> None:
    # llama-server saves a checkpoint of what cannot be rolled back (the sliding-window KV,
    # recurrent state) a completion; deployer renders CTX_CHECKPOINTS a slot and plans them.
    from deployer.core.fit.memory import CTX_CHECKPOINTS, checkpoint_bytes, kv_layer_bytes

    swa = [i % 2 == 0 for i in range(32)]
    arch = _arch(sliding_window=1024, swa_layers=swa)
    s = FitSettings(ctx=8192, parallel=2)
    cell = sum(kv_layer_bytes(arch, i, s, cells=1) for i in range(32) if swa[i])
    # A checkpoint saves the window's cells only, not the ubatch the cache holds beyond it
    # (measured: Gemma 3 1B, window 512, 11.0 MiB a checkpoint = 512 cells).
    assert checkpoint_bytes(arch, s) == CTX_CHECKPOINTS * 2 * 1024 * cell > 0
    assert checkpoint_bytes(arch, replace(s, n_ubatch=2048)) == checkpoint_bytes(arch, s)
    # A slot shorter than the window: at most the slot's cells.
    short = FitSettings(ctx=2048, parallel=4)
    assert checkpoint_bytes(arch, short) == CTX_CHECKPOINTS * 4 * 512 * cell
    # A model that rolls back (no window, no recurrent state) saves none; nor does Ollama.
    assert checkpoint_bytes(_arch(), s) == 0
    assert checkpoint_bytes(arch, FitSettings(ctx=8192, ctx_is_per_slot=True)) == 0
    rec = _arch(recurrent_state_bytes_per_seq=3 * MIB)
    assert checkpoint_bytes(rec, FitSettings(ctx=4096)) == CTX_CHECKPOINTS * 3 * MIB
    host = estimate_memory(_facts(arch), s, CPU).host
    assert host.checkpoint_bytes == checkpoint_bytes(arch, s)
    assert host.as_dict()["checkpoint_bytes"] == host.checkpoint_bytes


def test_ollama_keeps_token_embd_counted_and_the_plan_says_where_it_is_read() -> None:
    """Ollama's own engine reads tensors into buffers: its token_embd is held. Under llama-server
    on a GPU profile the plan's weights line names the table read in place on the host, and the
    JSON carries the bytes (cold_weights_bytes)."""
    from deployer.core.fit.plan import (
        PlanRequest,
        evaluate_option,
        machine_spec,
        make_plan,
        weights_summary,
    )
    from deployer.core.hardware.profiles import get_profile

    facts = _facts(_arch())
    s = FitSettings(ctx=8192, n_gpu_layers=33, ctx_is_per_slot=True)  # Ollama's num_ctx
    ollama = estimate_memory(facts, s, GPU)
    assert ollama.cold_weights_bytes == 0 and ollama.host.weights_bytes == 280 * MIB

    profile = get_profile("nvidia-a10g-24gb")
    full = make_plan("t", [facts], profile, PlanRequest(ctx=8192)).as_dict()
    assert full["cold_weights_bytes"] == 280 * MIB
    assert full["weights_summary"].endswith("read in place on the host, a row a token")
    assert "resident" not in full["weights_summary"]  # nothing else of the model is on the host
    part = evaluate_option(
        facts, FitSettings(ctx=8192, n_gpu_layers=20), profile, machine_spec(profile)
    )
    assert weights_summary(part) == (
        "memory-mapped, 1.27 GiB resident on the host; token_embd (280.0 MiB) read in place, a "
        "row a token"
    )  # 13 blocks of 100 MiB stay on the host
    via_ollama = make_plan("t", [facts], profile, PlanRequest(ctx=8192, backend="ollama"))
    assert via_ollama.as_dict()["cold_weights_bytes"] == 0


def _dsa(n_layer: int, **kw: object) -> ModelArch:
    """A DeepSeek 3.2-shaped MLA model with a lightning indexer on every layer, top-k 2048."""
    base: dict[str, object] = dict(
        architecture="deepseek32", n_layer=n_layer, n_head_kv=[1] * n_layer, head_dim_k=576,
        head_dim_v=512, mla=True, kv_lora_rank=512, n_rot=64, indexer_k=128,
        indexer_q=64 * 128, indexer_top_k=2048, indexer_layers=[True] * n_layer,
    )  # fmt: skip
    return _arch(**(base | kw))


@pytest.mark.parametrize("fa", [True, False])
def test_each_sparse_attention_layer_holds_its_top_k_zeros_from_the_graphs_start(fa: bool) -> None:
    """build_attn's top-k path makes a zero-filled top-k x ubatch f32 tensor per layer, a
    graph leaf placed before any node: 4 MiB a layer at top-k 2048 and ubatch 512, all layers
    at once (the real DeepSeek 3.2's 61 layers: 244 MiB), on every trunk layer of GLM-5 too,
    and only while the context holds more cells than top-k does it stop growing."""
    s = FitSettings(ctx=32768, flash_attention=fa)
    per_layer = compute_bytes(_dsa(61), s) - compute_bytes(_dsa(60), s)
    assert per_layer == 4 * 2048 * 512
    glm = _dsa(8, architecture="glm-dsa", indexer_layers=[True, False] * 4)
    assert compute_bytes(glm, s) - compute_bytes(_dsa(8), s) == 0  # shared layers make theirs
    small = FitSettings(ctx=1024, flash_attention=fa)  # fewer cells than top-k: top-k is 1024
    assert compute_bytes(_dsa(61), small) - compute_bytes(_dsa(60), small) == 4 * 1024 * 512


def test_deepseek4_zeros_are_f16_with_flash_attention_over_its_compressed_rows() -> None:
    """DeepSeek 4's build_top_k_mask runs on the layers compressed by 4, over their rows
    (a cell in four), f16 with flash attention and f32 without."""
    arch = _arch(architecture="deepseek4", n_layer=3, n_head_kv=[1] * 3, head_dim_k=64,
                 head_dim_v=64, sliding_window=128, swa_layers=[True] * 3, indexer_k=128,
                 indexer_top_k=2048, compress_ratios=[4, 4, 128])  # fmt: skip
    none = arch.model_copy(update={"indexer_top_k": 0})
    for fa, width in ((True, 2), (False, 4)):
        s = FitSettings(ctx=131072, flash_attention=fa)
        assert compute_bytes(arch, s) - compute_bytes(none, s) == width * 2048 * 512 * 2
    s = FitSettings(ctx=4096)  # 1024 compressed rows: fewer than top-k
    assert compute_bytes(arch, s) - compute_bytes(none, s) == 2 * 1024 * 512 * 2


def test_mla_without_flash_attention_copies_v_transposed() -> None:
    """An MLA cache's V is a view of K, not stored transposed: without flash attention the
    attention copies it (K's type, f16 at least) beside KQ, a row of the latent a cell."""
    arch = _dsa(2, architecture="deepseek2", indexer_k=0, indexer_q=0, indexer_top_k=0,
                indexer_layers=[])  # fmt: skip
    per_head = arch.model_copy(update={"mla": False})
    for ctx in (16384, 32768):
        s = FitSettings(ctx=ctx, flash_attention=False)
        assert compute_bytes(arch, s) - compute_bytes(per_head, s) == 2 * ctx * 512
    fa = FitSettings(ctx=16384)
    assert compute_bytes(arch, fa) == compute_bytes(per_head, fa)


def test_kimi_k3_banks_three_rows_a_checkpoint() -> None:
    arch = _arch(architecture="kimi-k3", residual_checkpoints=5)
    none = arch.model_copy(update={"residual_checkpoints": 0})
    s = FitSettings(ctx=8192)
    assert compute_bytes(arch, s) - compute_bytes(none, s) == 4 * 512 * 4096 * 3 * 5


def test_pooled_indexers_score_every_streams_cells() -> None:
    """GLM-5-Next's and Qwen4-exp's indexers score every stream's cells: 3 bytes a token per
    cell beyond the stream's own, nothing more with one slot."""
    arch = _dsa(4, architecture="glm5-next")
    deepseek = _dsa(4)
    one, many = FitSettings(ctx=32768), FitSettings(ctx=32768, parallel=16)
    leafs = 4 * (64 * 128) * 512 * 4 - 4 * 2048 * 512 * 4  # the pooled leafs, not top-k zeros
    assert compute_bytes(arch, one) - compute_bytes(deepseek, one) == leafs
    extra = compute_bytes(arch, many) - compute_bytes(deepseek, many) - leafs
    assert extra == 3 * 512 * (32768 - 2048)
