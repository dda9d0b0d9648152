"""The plan's KV cache and recurrent state against a real llama-server, on small real-shaped
files of architectures whose memory layout the loader decides rather than the file: a Qwen3.5
hybrid (three of four layers gated delta nets, holding a state and no KV, whatever
head_count_kv says), a Gemma 4 (windowed layers with their own head size, the last layers
reusing earlier caches), a Llama file that states a sliding window (llama.cpp never slides a
Llama: the full cache), and DeepSeek files of both generations (an MLA file caches the latent,
an older one every head's K and V) and DeepSeek 3.2 (an indexer cache beside the latent).
Weights are zeros; the buffers llama-server logs are what is checked."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.core.fit.llamalog import parse_buffers
from deployer.core.fit.memory import FitSettings, compute_bytes, kv_bytes, recurrent_bytes
from deployer.core.units import MIB

pytestmark = [pytest.mark.llama_server, pytest.mark.usefixtures("llama_server_prefix")]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

E, FF, V = 256, 512, 512  # embedding, feed-forward, vocabulary of the small files


def _start(path: Path, arch: str, keys: dict[str, int]) -> GGUFWriter:
    w = GGUFWriter(path, arch)
    for k, v in keys.items():
        w.add_uint32(f"{arch}.{k}", v)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32(f"{arch}.rope.freq_base", 1e6)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"t{i}" for i in range(V - len(tokens))]
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * V)
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (V - 259))
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    return w


def _tensor(w: GGUFWriter, name: str, *shape: int) -> None:
    w.add_tensor(name, np.zeros(tuple(reversed(shape)), dtype=np.float32))


def _embeddings(w: GGUFWriter) -> None:
    """token_embd, output_norm and an untied output.weight."""
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "output_norm.weight", E)
    _tensor(w, "output.weight", E, V)


def _llama_blocks(w: GGUFWriter, n_layer: int, kv_width: int) -> None:
    """Llama's blocks (src/models/llama.cpp): attention with `kv_width`-wide K and V, SwiGLU."""
    for il in range(n_layer):
        p = f"blk.{il}."
        for name, shape in (
            ("attn_norm.weight", (E,)), ("attn_q.weight", (E, E)),
            ("attn_k.weight", (E, kv_width)), ("attn_v.weight", (E, kv_width)),
            ("attn_output.weight", (E, E)), ("ffn_norm.weight", (E,)),
            ("ffn_gate.weight", (E, FF)), ("ffn_down.weight", (FF, E)), ("ffn_up.weight", (E, FF)),
        ):  # fmt: skip
            _tensor(w, p + name, *shape)


def _finish(w: GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def qwen35(path: Path, n_layer: int = 8) -> Path:
    """Qwen3.5's layout (src/models/qwen35.cpp): every 4th layer attention, the rest gated
    delta nets with a convolution over Q, K and V and a head_k x head_v state per value head."""
    n_head, n_kv, head = 4, 2, 64
    d_conv, d_state, n_group, dt_rank = 4, 32, 2, 4
    key_dim, value_dim = d_state * n_group, d_state * dt_rank
    w = _start(path, "qwen35", {
        "block_count": n_layer, "embedding_length": E, "context_length": 32768,
        "feed_forward_length": FF, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "attention.key_length": head,
        "attention.value_length": head, "rope.dimension_count": head,
        "ssm.conv_kernel": d_conv, "ssm.inner_size": value_dim, "ssm.state_size": d_state,
        "ssm.group_count": n_group, "ssm.time_step_rank": dt_rank,
    })  # fmt: skip
    w.add_array("qwen35.rope.dimension_sections", [11, 11, 10, 0])
    _embeddings(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        _tensor(w, p + "attn_norm.weight", E)
        _tensor(w, p + "post_attention_norm.weight", E)
        if (il + 1) % 4 == 0:
            _tensor(w, p + "attn_q.weight", E, head * n_head * 2)
            _tensor(w, p + "attn_k.weight", E, head * n_kv)
            _tensor(w, p + "attn_v.weight", E, head * n_kv)
            _tensor(w, p + "attn_output.weight", head * n_head, E)
            _tensor(w, p + "attn_q_norm.weight", head)
            _tensor(w, p + "attn_k_norm.weight", head)
        else:
            _tensor(w, p + "attn_qkv.weight", E, 2 * key_dim + value_dim)
            _tensor(w, p + "attn_gate.weight", E, value_dim)
            _tensor(w, p + "ssm_conv1d.weight", d_conv, 2 * key_dim + value_dim)
            _tensor(w, p + "ssm_dt.bias", dt_rank)
            _tensor(w, p + "ssm_a", dt_rank)
            _tensor(w, p + "ssm_beta.weight", E, dt_rank)
            _tensor(w, p + "ssm_alpha.weight", E, dt_rank)
            _tensor(w, p + "ssm_norm.weight", d_state)
            _tensor(w, p + "ssm_out.weight", value_dim, E)
        _tensor(w, p + "ffn_gate.weight", E, FF)
        _tensor(w, p + "ffn_down.weight", FF, E)
        _tensor(w, p + "ffn_up.weight", E, FF)
    _finish(w)
    return path


def llama_with_window(path: Path, n_layer: int = 4) -> Path:
    """A Llama whose file states a 512-token window, which llama.cpp's Llama loader ignores."""
    n_head, n_kv, head = 4, 2, 64
    w = _start(path, "llama", {
        "block_count": n_layer, "embedding_length": E, "context_length": 32768,
        "feed_forward_length": FF, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "rope.dimension_count": head,
        "attention.sliding_window": 512, "vocab_size": V,
    })  # fmt: skip
    _embeddings(w)
    _llama_blocks(w, n_layer, head * n_kv)
    _finish(w)
    return path


def gemma4(path: Path, n_layer: int = 8) -> Path:
    """Gemma 4's layout (src/models/gemma4.cpp): windowed layers with 128-wide heads, full ones
    with 256, and the last two layers reusing earlier layers' caches (shared_kv_layers)."""
    n_head, n_kv, head, head_swa = 4, 2, 256, 128
    # the last own-cache layers are a windowed then a full one: a shared windowed layer reuses
    # layer kv_layers - 2, a shared full one kv_layers - 1 (llama.cpp asserts the kinds match)
    pattern = [True, True, False, True, True, False, True, False][:n_layer]
    w = _start(path, "gemma4", {
        "block_count": n_layer, "embedding_length": E, "context_length": 32768,
        "feed_forward_length": FF, "attention.head_count": n_head,
        "attention.head_count_kv": n_kv, "attention.key_length": head,
        "attention.value_length": head, "attention.key_length_swa": head_swa,
        "attention.value_length_swa": head_swa, "attention.sliding_window": 512,
        "attention.shared_kv_layers": 2, "embedding_length_per_layer_input": 0,
        "rope.dimension_count": head, "rope.dimension_count_swa": head_swa,
    })  # fmt: skip
    w.add_array("gemma4.attention.sliding_window_pattern", pattern)
    _tensor(w, "token_embd.weight", E, V)
    _tensor(w, "output_norm.weight", E)
    _tensor(w, "rope_freqs.weight", head // 2)
    for il in range(n_layer):
        p, hd = f"blk.{il}.", head_swa if pattern[il] else head
        for name, shape in (
            ("attn_norm.weight", (E,)), ("attn_q.weight", (E, hd * n_head)),
            ("attn_k.weight", (E, hd * n_kv)), ("attn_v.weight", (E, hd * n_kv)),
            ("attn_output.weight", (hd * n_head, E)), ("attn_q_norm.weight", (hd,)),
            ("attn_k_norm.weight", (hd,)), ("post_attention_norm.weight", (E,)),
            ("ffn_norm.weight", (E,)), ("ffn_gate.weight", (E, FF)), ("ffn_up.weight", (E, FF)),
            ("ffn_down.weight", (FF, E)), ("post_ffw_norm.weight", (E,)),
        ):  # fmt: skip
            _tensor(w, p + name, *shape)
    _finish(w)
    return path


def _deepseek(path: Path, arch: str, *, mla: bool, n_layer: int = 4, nextn: int = 0) -> Path:
    """DeepSeek's attention (src/models/deepseek2.cpp, deepseek32.cpp): a low-rank Q and a
    compressed KV. An MLA file (key_length_mla stated) caches the latent and its rope part as
    one K head; an older file without those keys caches every head's K and V. DeepSeek 3.2
    adds the lightning indexer, whose keys llama.cpp caches beside the latent."""
    n_head, q_lora, kv_lora, rope, nope, v_head = 4, 64, 64, 16, 32, 32
    idx_heads, idx_head = 4, 64  # the Hadamard rotation of the keys works in blocks of 64
    keys = {
        "block_count": n_layer, "embedding_length": E, "context_length": 32768,
        "feed_forward_length": FF, "attention.head_count": n_head,
        "attention.q_lora_rank": q_lora, "attention.kv_lora_rank": kv_lora,
        "rope.dimension_count": rope, "expert_feed_forward_length": FF,
        "expert_shared_count": 1, "leading_dense_block_count": n_layer, "vocab_size": V,
        "nextn_predict_layers": nextn,
    }  # fmt: skip
    if mla:
        keys |= {"attention.head_count_kv": 1, "attention.key_length": kv_lora + rope,
                 "attention.value_length": kv_lora, "attention.key_length_mla": nope + rope,
                 "attention.value_length_mla": v_head}  # fmt: skip
    else:
        keys |= {"attention.head_count_kv": n_head, "attention.key_length": nope + rope,
                 "attention.value_length": v_head}  # fmt: skip
    if arch == "deepseek32":
        keys |= {"attention.indexer.head_count": idx_heads,
                 "attention.indexer.key_length": idx_head, "attention.indexer.top_k": 64,
                 "expert_gating_func": 2}  # fmt: skip
    w = _start(path, arch, keys)
    _embeddings(w)
    for il in range(n_layer):
        p = f"blk.{il}."
        for name, shape in (
            ("attn_norm.weight", (E,)), ("attn_q_a_norm.weight", (q_lora,)),
            ("attn_kv_a_norm.weight", (kv_lora,)), ("attn_q_a.weight", (E, q_lora)),
            ("attn_q_b.weight", (q_lora, n_head * (nope + rope))),
            ("attn_kv_a_mqa.weight", (E, kv_lora + rope)),
            ("attn_output.weight", (n_head * v_head, E)), ("ffn_norm.weight", (E,)),
            ("ffn_gate.weight", (E, FF)), ("ffn_down.weight", (FF, E)), ("ffn_up.weight", (E, FF)),
        ):  # fmt: skip
            _tensor(w, p + name, *shape)
        if mla:
            _tensor(w, p + "attn_k_b.weight", nope, kv_lora, n_head)
            _tensor(w, p + "attn_v_b.weight", kv_lora, v_head, n_head)
        else:
            _tensor(w, p + "attn_kv_b.weight", kv_lora, n_head * (nope + v_head))
        if il >= n_layer - nextn:  # an MTP block: the layer's tensors and its own
            _tensor(w, p + "nextn.eh_proj.weight", 2 * E, E)
            _tensor(w, p + "nextn.enorm.weight", E)
            _tensor(w, p + "nextn.hnorm.weight", E)
            _tensor(w, p + "nextn.shared_head_norm.weight", E)
        if arch == "deepseek32":
            _tensor(w, p + "indexer.k_norm.weight", idx_head)
            _tensor(w, p + "indexer.k_norm.bias", idx_head)
            _tensor(w, p + "indexer.proj.weight", E, idx_heads)
            _tensor(w, p + "indexer.attn_k.weight", E, idx_head)
            _tensor(w, p + "indexer.attn_q_b.weight", q_lora, idx_heads * idx_head)
    _finish(w)
    return path


def deepseek2_mla(path: Path) -> Path:
    return _deepseek(path, "deepseek2", mla=True)


def deepseek2_per_head(path: Path) -> Path:
    return _deepseek(path, "deepseek2", mla=False)


def deepseek32(path: Path) -> Path:
    return _deepseek(path, "deepseek32", mla=True)


def deepseek4(path: Path, n_layer: int = 4, ratios: tuple[int, ...] = (0, 4, 128, 4)) -> Path:
    """DeepSeek 4 (src/models/deepseek4.cpp, llama-kv-cache-dsv4.cpp): every layer windowed,
    K only, and on the layers with a compress ratio a compressed cache of a row per 4 (with the
    lightning indexer's keys) or 128 tokens, and their compressors' state; hyper-connections
    widen the residual stream. The indexer head differs from the attention head as on the real
    model (llama.cpp's Hadamard rotation of an empty cache divides by zero otherwise)."""
    n_head, head, rope, q_lora, o_groups, o_lora, hc = 4, 64, 16, 64, 2, 32, 4
    n_exp, n_used, ff_exp, idx_heads, idx_head = 4, 2, 128, 4, 128
    w = _start(path, "deepseek4", {
        "block_count": n_layer, "embedding_length": E, "context_length": 65536,
        "feed_forward_length": FF, "attention.head_count": n_head, "attention.head_count_kv": 1,
        "attention.key_length": head, "attention.value_length": head, "rope.dimension_count": rope,
        "attention.q_lora_rank": q_lora, "attention.sliding_window": 128,
        "expert_feed_forward_length": ff_exp, "expert_shared_count": 1, "expert_count": n_exp,
        "expert_used_count": n_used, "attention.indexer.head_count": idx_heads,
        "attention.indexer.key_length": idx_head, "attention.indexer.top_k": 16,
        "attention.output_group_count": o_groups, "attention.output_lora_rank": o_lora,
        "hyper_connection.count": hc, "hyper_connection.sinkhorn_iterations": 3,
        "hash_layer_count": 0, "expert_gating_func": 4, "vocab_size": V,
    })  # fmt: skip
    w.add_float32("deepseek4.expert_weights_scale", 1.5)
    w.add_bool("deepseek4.expert_weights_norm", True)
    w.add_float32("deepseek4.swiglu_clamp_exp", 10.0)
    w.add_float32("deepseek4.attention.compress_rope_freq_base", 160000.0)
    w.add_float32("deepseek4.hyper_connection.epsilon", 1e-6)
    w.add_array("deepseek4.attention.compress_ratios", list(ratios))
    hc_dim, mix = hc * E, (2 + hc) * hc
    _embeddings(w)
    _tensor(w, "output_hc_fn.weight", hc_dim, hc)
    _tensor(w, "output_hc_base.weight", hc)
    _tensor(w, "output_hc_scale.weight", 1)
    for il in range(n_layer):
        p = f"blk.{il}."
        for name, shape in (
            ("attn_norm.weight", (E,)), ("attn_sinks.weight", (n_head,)),
            ("attn_q_a.weight", (E, q_lora)), ("attn_q_a_norm.weight", (q_lora,)),
            ("attn_q_b.weight", (q_lora, n_head * head)), ("attn_kv.weight", (E, head)),
            ("attn_kv_a_norm.weight", (head,)),
            ("attn_output_a.weight", (n_head * head // o_groups, o_lora * o_groups)),
            ("attn_output_b.weight", (o_groups * o_lora, E)),
            ("hc_attn_fn.weight", (hc_dim, mix)), ("hc_attn_base.weight", (mix,)),
            ("hc_attn_scale.weight", (3,)), ("hc_ffn_fn.weight", (hc_dim, mix)),
            ("hc_ffn_base.weight", (mix,)), ("hc_ffn_scale.weight", (3,)),
            ("ffn_gate_inp.weight", (E, n_exp)), ("exp_probs_b.bias", (n_exp,)),
            ("ffn_norm.weight", (E,)), ("ffn_gate_exps.weight", (E, ff_exp, n_exp)),
            ("ffn_down_exps.weight", (ff_exp, E, n_exp)), ("ffn_up_exps.weight", (E, ff_exp, n_exp)),
            ("ffn_gate_shexp.weight", (E, ff_exp)), ("ffn_down_shexp.weight", (ff_exp, E)),
            ("ffn_up_shexp.weight", (E, ff_exp)),
        ):  # fmt: skip
            _tensor(w, p + name, *shape)
        r = ratios[il]
        if r:
            coff = 2 if r == 4 else 1
            _tensor(w, p + "attn_compressor_kv.weight", E, coff * head)
            _tensor(w, p + "attn_compressor_gate.weight", E, coff * head)
            _tensor(w, p + "attn_compressor_ape.weight", coff * head, r)
            _tensor(w, p + "attn_compressor_norm.weight", head)
        if r == 4:
            _tensor(w, p + "indexer.proj.weight", E, idx_heads)
            _tensor(w, p + "indexer.attn_q_b.weight", q_lora, idx_heads * idx_head)
            _tensor(w, p + "indexer_compressor_kv.weight", E, 2 * idx_head)
            _tensor(w, p + "indexer_compressor_gate.weight", E, 2 * idx_head)
            _tensor(w, p + "indexer_compressor_ape.weight", 2 * idx_head, r)
            _tensor(w, p + "indexer_compressor_norm.weight", idx_head)
    _finish(w)
    return path


@pytest.mark.parametrize(
    "build",
    [qwen35, llama_with_window, gemma4, deepseek2_mla, deepseek2_per_head, deepseek32, deepseek4],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize(("ctx", "slots", "fa"), [(8192, 2, True), (4096, 1, False)])
def test_kv_and_state_are_what_llama_server_allocates(
    tmp_path: Path, build: object, ctx: int, slots: int, fa: bool
) -> None:
    from _llama import run_server

    path = build(tmp_path / "m.gguf")  # type: ignore[operator]
    run = run_server(path, ["-c", str(ctx), "-np", str(slots), "-fa", "on" if fa else "off",
                            "--fit", "off", "-t", "2"])  # fmt: skip
    logged = parse_buffers(run.log.split("loaded meta data")[-1])
    arch = facts_from_gguf(path).arch
    s = FitSettings(ctx=ctx, parallel=slots, flash_attention=fa)
    # the log prints MiB to two decimals, a line per cache
    state = recurrent_bytes(arch, range(arch.n_layer), s)
    if build is deepseek4:  # its compressors' state is logged apart, counted with its cache
        plan = kv_bytes(arch, range(arch.n_layer), s)
        assert abs(plan - logged.cache("host")) <= 0.02 * 2**20
        assert logged.get("host", "RS") > 0 and state == 0
        assert arch.swa_layers == [True] * 4 and arch.compress_ratios == [0, 4, 128, 4]
        # hyper-connections and the compressed rows' scores: never under (without flash
        # attention far over: the plan's KQ spans the context, DeepSeek 4's the window)
        assert logged.get("host", "compute") <= compute_bytes(arch, s)
        return
    assert abs(kv_bytes(arch, range(arch.n_layer), s) - logged.get("host", "KV")) <= 0.01 * 2**20
    assert abs(state - logged.get("host", "RS")) <= 0.01 * 2**20
    if build is qwen35:
        assert state > 0 and arch.n_head_kv == [0, 0, 0, 2] * 2
    elif build is gemma4:
        assert (arch.kv_layers, arch.head_dims(0), arch.head_dims(2)) == (6, (128, 128), (256, 256))
    elif build in (deepseek2_mla, deepseek2_per_head, deepseek32):
        assert arch.mla == (build is not deepseek2_per_head)
        assert any(arch.indexer_layers) == (build is deepseek32)
        # the indexer's scores and masks weigh on the compute buffer: never under, 3 MiB over
        compute = compute_bytes(arch, s)
        assert logged.get("host", "compute") <= compute <= logged.get("host", "compute") + 3 * MIB
    else:
        assert state == 0 and arch.swa_layers == []


def test_mtp_blocks_hold_neither_weights_nor_cache(tmp_path: Path) -> None:
    """A DeepSeek/GLM-4.5 file with an MTP (nextn) block: llama-server skips its tensors
    unless MTP drafting is asked for, and its main context's cache leaves the block out."""
    from _llama import run_server

    path = _deepseek(tmp_path / "m.gguf", "deepseek2", mla=True, n_layer=5, nextn=1)
    run = run_server(path, ["-c", "4096", "-np", "1", "-lm", "none", "--fit", "off", "-t", "2"])
    logged = parse_buffers(run.log.split("loaded meta data")[-1])
    facts = facts_from_gguf(path)
    assert facts.arch.nextn_layers == 1 and facts.weights.block_bytes[4] == 0
    assert abs(facts.weights.tensor_bytes - logged.get("host", "model")) <= 0.01 * MIB
    for fa in (True, False):
        s = FitSettings(ctx=4096, flash_attention=fa)
        assert abs(kv_bytes(facts.arch, range(5), s) - logged.get("host", "KV")) <= 0.01 * MIB
        assert kv_bytes(facts.arch, [4], s) == 0


def _q4(w: GGUFWriter, name: str, *shape: int, kind: str = "Q4_0") -> None:
    from gguf import GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    qtype = GGMLQuantizationType[kind]
    raw = quant_shape_to_byte_shape(tuple(reversed(shape)), qtype)
    w.add_tensor(name, np.zeros(raw, dtype=np.uint8), raw_dtype=qtype)


def pure_q4(path: Path, *, tied: bool) -> Path:
    """A "pure" Q4 Llama: the output matrix in a repacked type, tied (token_embd Q4_0, which
    the output duplicates) or untied (output.weight Q4_K)."""
    w = _start(path, "llama", {
        "block_count": 2, "embedding_length": E, "context_length": 4096,
        "feed_forward_length": FF, "attention.head_count": 4, "attention.head_count_kv": 2,
        "rope.dimension_count": 64, "vocab_size": V,
    })  # fmt: skip
    _q4(w, "token_embd.weight", E, V)
    _tensor(w, "output_norm.weight", E)
    if not tied:
        _q4(w, "output.weight", E, V, kind="Q4_K")
    _llama_blocks(w, 2, 128)
    _finish(w)
    return path


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("mode", ["mmap", "none"])
def test_a_repacked_output_matrix_is_counted(tmp_path: Path, tied: bool, mode: str) -> None:
    """The CPU backend repacks the output matrix when its type is a repacked one: an untied
    output.weight moves into CPU_REPACK, a tied token_embd gets a CPU_REPACK duplicate beside
    itself. The plan's logged host weights match the log in both load modes."""
    from _llama import run_server

    from deployer.core.fit.memory import MachineSpec, estimate_memory

    path = pure_q4(tmp_path / "m.gguf", tied=tied)
    run = run_server(path, ["-c", "4096", "-np", "1", "-lm", mode, "--fit", "off", "-t", "2"])
    logged = parse_buffers(run.log.split("loaded meta data")[-1])
    facts = facts_from_gguf(path)
    assert facts.weights.output_repack_bytes > 0
    cpu = MachineSpec(kind="cpu", device_count=0, device_budget_bytes=0,
                      device_overhead_bytes=0, host_budget_bytes=2**34, cpu_threads=2)  # fmt: skip
    host = estimate_memory(facts, FitSettings(ctx=4096, load_mode=mode), cpu).host
    assert abs(host.logged_weights_bytes - logged.get("host", "model")) <= 0.02 * MIB
