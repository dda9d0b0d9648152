"""Model catalog: shipped data and its invariants, user overrides, errors, the `models` CLI."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from typer.testing import CliRunner

from deployer.adapters.data_files import config_dir, data_dir
from deployer.cli.app import app
from deployer.core.datafiles import parse_yaml_model
from deployer.core.errors import InvalidDataFile, ModelNotFound
from deployer.core.model.catalog import CatalogModel, get_model, load_catalog
from deployer.core.model.weights import base_bpw
from tests.unit.hostile_yaml import mutated, random_document

SHIPPED = sorted(
    e.name.removesuffix(".yaml") for e in data_dir("catalog").iterdir() if e.name.endswith(".yaml")
)
REQUIRED = [
    "llama-3.1-8b-instruct", "llama-3.1-70b-instruct", "llama-3.1-405b-instruct",
    "llama-3.2-1b-instruct", "llama-3.2-3b-instruct", "llama-3.3-70b-instruct",
    "llama-2-7b-chat", "llama-2-13b-chat", "codellama-34b-instruct", "codellama-70b-instruct",
    "mistral-7b-instruct-v0.3", "mixtral-8x7b-instruct-v0.1", "falcon3-7b-instruct",
    "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct",
    "qwen2.5-7b-instruct", "qwen2.5-14b-instruct", "qwen2.5-32b-instruct", "qwen2.5-72b-instruct",
    "qwen3-0.6b", "qwen3-8b", "qwen3-32b", "qwen3-30b-a3b", "qwen3-235b-a22b",
    "gemma-2-2b-it", "gemma-2-9b-it", "gemma-2-27b-it",
    "gemma-3-270m-it", "gemma-3-1b-it", "gemma-3-4b-it", "gemma-3-12b-it", "gemma-3-27b-it",
    "phi-3-mini-4k-instruct", "phi-3-medium-4k-instruct", "phi-4", "phi-4-mini-instruct",
    "deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-qwen-14b", "deepseek-r1-distill-qwen-32b",
    "deepseek-r1-distill-llama-8b", "deepseek-r1-distill-llama-70b",
    "gpt-oss-20b", "gpt-oss-120b",
]  # fmt: skip

# Architectures whose config sets head_dim on its own (n_head * head_dim != n_embd).
EXPLICIT_HEAD_DIM = {"qwen3", "qwen3moe", "gemma2", "gemma3", "gpt-oss"}
# gpt-oss keeps its experts in MXFP4 whatever the file's label says (see the model's notes).
LABEL_IS_NOT_TENSOR_TYPE = {"gpt-oss-20b", "gpt-oss-120b"}
HEADER_BYTES_PER_TOKEN = 50  # tokenizer strings, scores and merges in the GGUF header
OUTPUT_BPW = 6.5625  # llama-quantize keeps the output matrix at Q6_K below Q8_0

runner = CliRunner()


@cache
def _shipped(model_id: str) -> CatalogModel:
    """One shipped file, parsed once (the user dir plays no part in the data checks)."""
    path = Path(str(data_dir("catalog"))) / f"{model_id}.yaml"
    return parse_yaml_model(path.read_text(encoding="utf-8"), CatalogModel, str(path))


def _models() -> list[CatalogModel]:
    return [_shipped(model_id) for model_id in SHIPPED]


def _user_model(name: str, text: str) -> Path:
    folder = config_dir() / "models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _shipped_yaml(model_id: str) -> dict[str, object]:
    data = yaml.safe_load((Path(str(data_dir("catalog"))) / f"{model_id}.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _row_bpw(quant: str, n_embd: int) -> float:
    """Bits per weight of the bulk tensors, with llama-quantize's fallback for odd row sizes."""
    bpw = base_bpw(quant)
    if n_embd % 256 == 0 or bpw >= 8:
        return bpw
    # K-quant blocks span 256 weights; other rows fall back (Q4_K->Q5_0, Q5_K->Q5_1, ...).
    if quant.startswith("Q4_K"):
        return 5.5
    if quant.startswith("Q5_K"):
        return 6.0
    if quant.startswith("Q6_K"):
        return 8.5
    return 4.5  # Q2_K, Q3_K and IQ types fall back to IQ4_NL


def expected_file_bytes(model: CatalogModel, quant: str) -> float:
    """File size predicted from parameters, the quant's bpw and the embedding rule."""
    arch = model.arch
    bpw = _row_bpw(quant, arch.n_embd)
    out_bpw = bpw if bpw >= 8 else (OUTPUT_BPW if arch.n_embd % 256 == 0 else 8.5)
    embd = arch.n_vocab * arch.n_embd
    params = model.params_b * 1e9
    if arch.tied_embeddings:
        # token_embd doubles as the output matrix, so it gets the output's type.
        tensors = (params - embd) * bpw + embd * out_bpw
    else:
        tensors = (params - 2 * embd) * bpw + embd * bpw + embd * out_bpw
    return tensors / 8 + arch.n_vocab * HEADER_BYTES_PER_TOKEN


def test_every_shipped_file_loads_with_its_id() -> None:
    catalog = load_catalog()
    assert sorted(catalog) == SHIPPED
    assert len(catalog) >= 40


def test_required_models_are_shipped() -> None:
    missing = set(REQUIRED) - set(load_catalog())
    assert not missing, missing


@pytest.mark.parametrize("model_id", SHIPPED)
def test_model_invariants(model_id: str) -> None:
    m = _shipped(model_id)
    a = m.arch
    assert m.name and m.family and m.source and m.hf_base_model.count("/") == 1
    assert m.default_quant in m.quants
    assert a.n_head % a.n_head_kv == 0
    assert a.ctx_train >= 2048 and a.n_vocab > 1000
    assert (a.sliding_window > 0) == (a.swa_pattern != "none")
    assert (a.n_expert > 0) == (a.n_expert_used > 0) and a.n_expert_used <= a.n_expert
    if a.architecture not in EXPLICIT_HEAD_DIM:
        assert a.head_dim * a.n_head == a.n_embd
    assert m.license.url.startswith("https://") and m.license.commercial_use.endswith(".")


@pytest.mark.parametrize("model_id", SHIPPED)
def test_quant_files_are_plausible(model_id: str) -> None:
    m = _shipped(model_id)
    for label, qf in m.quants.items():
        assert label == label.upper() and " " not in label
        assert qf.repo.count("/") == 1 and qf.file.endswith(".gguf")
        assert "*" not in qf.file and "{" not in qf.file
        if qf.split_parts > 1:
            assert f"-00001-of-{qf.split_parts:05d}.gguf" in qf.file
        else:
            assert "-of-0000" not in qf.file
        if m.id in LABEL_IS_NOT_TENSOR_TYPE:
            continue
        ratio = qf.bytes / expected_file_bytes(m, label)
        assert 0.65 <= ratio <= 1.35, f"{label}: {qf.bytes} B is {ratio:.2f}x the expected size"


@pytest.mark.parametrize("model_id", SHIPPED)
def test_sizes_follow_bits_per_weight(model_id: str) -> None:
    m = _shipped(model_id)
    if m.id in LABEL_IS_NOT_TENSOR_TYPE:
        assert "Q2_K << Q8_0" in m.notes  # the note warns pickers instead
        return
    ladder = [m.quants[q].bytes for q in ("Q2_K", "Q4_K_M", "Q8_0") if q in m.quants]
    assert ladder == sorted(ladder) and len(set(ladder)) == len(ladder)


def test_demo_model_facts() -> None:
    m = _shipped("gemma-3-270m-it")
    assert m.quants["Q4_K_M"].bytes == 253113024
    assert m.quants["Q4_K_M"].repo == "unsloth/gemma-3-270m-it-GGUF"
    arch = m.arch.to_arch()
    assert arch.n_layer == 18 and arch.head_dim_k == 256 and arch.n_head_kv == [1] * 18
    assert [i for i in range(18) if not arch.is_swa(i)] == [5, 11, 17]


def test_swa_patterns_match_llama_cpp() -> None:
    # llama.cpp marks gemma2 and gpt-oss layers il % 2 == 0 as sliding-window.
    for model_id in ("gemma-2-9b-it", "gpt-oss-20b"):
        arch = _shipped(model_id).arch.to_arch()
        assert arch.is_swa(0) and not arch.is_swa(1)


def test_split_sets_are_summed() -> None:
    qf = _shipped("qwen3-235b-a22b").quants["Q4_K_M"]
    assert qf.split_parts == 5 and qf.file.startswith("Q4_K_M/")
    assert 130e9 < qf.bytes < 150e9


def test_llama_licences_restrict_use() -> None:
    for m in _models():
        built_on_llama = m.family in {"llama2", "llama3", "codellama"} or "Llama" in m.id.title()
        if built_on_llama:
            assert m.license.id.startswith("llama"), m.id
        if m.license.id.startswith(("llama", "gemma")):
            assert m.license.restricts_use, m.id
        if m.license.id in {"apache-2.0", "mit"}:
            assert not m.license.restricts_use, m.id
    assert _shipped("qwen2.5-3b-instruct").license.id == "qwen-research"
    assert _shipped("deepseek-r1-distill-qwen-7b").license.id == "mit"


def test_user_model_overrides_shipped_and_adds_new() -> None:
    data = _shipped_yaml("qwen3-8b")
    data["notes"] = "mine"
    _user_model("qwen3-8b", yaml.safe_dump(data))
    data["id"] = "my-model"
    _user_model("my-model", yaml.safe_dump(data))
    catalog = load_catalog()
    assert catalog["qwen3-8b"].notes == "mine"
    assert catalog["my-model"].arch.n_layer == 36
    assert len(catalog) == len(SHIPPED) + 1


def test_invalid_user_model_names_file_and_line() -> None:
    text = yaml.safe_dump(_shipped_yaml("qwen3-8b"), sort_keys=False)
    text = text.replace("  n_layer: 36\n", "  n_layer: 36\n  n_layers: 36\n")
    path = _user_model("qwen3-8b", text)
    line = text.splitlines().index("  n_layers: 36") + 1
    with pytest.raises(InvalidDataFile) as info:
        load_catalog()
    assert (info.value.path, info.value.line) == (str(path), line)
    assert "arch.n_layers" in info.value.problem and "unknown key" in info.value.problem


def test_user_model_id_must_match_file_name() -> None:
    data = _shipped_yaml("qwen3-8b")
    path = _user_model("other-name", yaml.safe_dump(data))
    with pytest.raises(InvalidDataFile) as info:
        load_catalog()
    assert info.value.path == str(path) and "must match the file name" in info.value.problem


def test_unknown_id_gives_close_matches() -> None:
    with pytest.raises(ModelNotFound) as info:
        get_model("llama-3.1-8b")
    assert "llama-3.1-8b-instruct" in info.value.close_matches
    assert "deployer models list" in info.value.message()


def test_cli_list_table() -> None:
    result = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "gemma-3-270m-it" in result.stdout and "gpt-oss MoE 4/32" in result.stdout


def test_cli_list_json_and_family_filter() -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {m["id"] for m in data} == set(SHIPPED)
    result = runner.invoke(app, ["models", "list", "--family", "Gemma3", "--json"])
    ids = {m["id"] for m in json.loads(result.stdout)}
    assert ids == {m for m in SHIPPED if m.startswith("gemma-3-")}


def test_cli_list_unknown_family_is_one_line() -> None:
    result = runner.invoke(app, ["models", "list", "--family", "gema3"])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "'gemma3'" in result.stderr


def test_cli_show_table_and_json() -> None:
    result = runner.invoke(app, ["models", "show", "llama-3.1-8b-instruct"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf" in out and "4.92" in out
    assert "llama3.1" in out and "700M" in out
    result = runner.invoke(app, ["models", "show", "GPT-OSS-120B", "--json"])
    data = json.loads(result.stdout)
    assert data["quants"]["MXFP4"]["split_parts"] == 3
    assert data["license"]["id"] == "apache-2.0"


def test_cli_show_unknown_is_one_line_with_close_match() -> None:
    result = runner.invoke(app, ["models", "show", "qwen3-7b"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown model 'qwen3-7b'")
    assert "'qwen3-8b'" in lines[0]
    assert result.stdout == ""


DOCS = Path(__file__).resolve().parents[2] / "docs" / "models.md"
TABLE_START = "<!-- licence-table:start -->"
TABLE_END = "<!-- licence-table:end -->"


def licence_table(models: list[CatalogModel]) -> str:
    """The docs' licence table, generated from the catalog data."""
    lines = [
        "| model | licence | gated | restricts use | commercial use |",
        "|---|---|---|---|---|",
    ]
    for m in sorted(models, key=lambda m: (m.family, m.params_b, m.id)):
        lic = m.license
        lines.append(
            f"| {m.id} | [{lic.id}]({lic.url}) | {'yes' if lic.gated else 'no'} "
            f"| {'yes' if lic.restricts_use else 'no'} | {lic.commercial_use} |"
        )
    return "\n".join(lines)


def test_docs_licence_table_is_current(update_golden: bool) -> None:
    text = DOCS.read_text(encoding="utf-8")
    head, rest = text.split(TABLE_START + "\n", 1)
    current, tail = rest.split(TABLE_END, 1)
    table = licence_table(_models()) + "\n"
    if update_golden:
        DOCS.write_text(head + TABLE_START + "\n" + table + TABLE_END + tail, encoding="utf-8")
        return
    assert current == table, "run: pytest tests/unit/test_catalog.py --update-golden"


# ---- hostile catalog entries: bounded numbers, safe strings, one-line errors -----------------

SMALL = ["gemma-3-270m-it", "qwen3-0.6b", "gpt-oss-20b", "qwen3-30b-a3b"]


def _one_line(err: InvalidDataFile) -> str:
    msg = err.message()
    assert "\n" not in msg and msg.isprintable(), repr(msg)
    return msg


def _with(model_id: str, path: tuple[str, ...], value: object) -> str:
    data: Any = _shipped_yaml(model_id)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return yaml.safe_dump(data, sort_keys=False)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("params_b",), float("inf"), "params_b"),
        (("params_b",), float("nan"), "params_b"),
        (("params_b",), -1, "params_b"),
        (("arch", "n_layer"), 0, "arch.n_layer"),
        (("arch", "n_layer"), 10**30, "arch.n_layer"),
        (("arch", "ctx_train"), 1e308, "arch.ctx_train"),
        (("arch", "n_head_kv"), 0, "arch.n_head_kv"),
        (("arch", "n_head_kv"), 3, "arch"),  # 4 heads are not a multiple of 3 KV heads
        (("arch", "n_expert_used"), 4, "arch"),  # a dense model with experts in use
        (("arch", "sliding_window"), 0, "arch"),  # its swa_pattern needs a window
        (("arch", "n_merges"), -1, "arch.n_merges"),
        (("arch", "n_merges"), 4 * (1 << 22) + 1, "arch.n_merges"),  # 4 x MAX_VOCAB
        (("arch", "n_merges"), 1e308, "arch.n_merges"),
        (("quants", "Q4_K_M", "bytes"), 0, "quants.Q4_K_M.bytes"),
        (("quants", "Q4_K_M", "bytes"), 2**80, "quants.Q4_K_M.bytes"),
        (("quants", "Q4_K_M", "split_parts"), 10**6, "quants.Q4_K_M.split_parts"),
        (("quants", "Q4_K_M", "file"), "../../etc/passwd.gguf", "quants.Q4_K_M.file"),
        (("quants", "Q4_K_M", "file"), "/abs/model.gguf", "quants.Q4_K_M.file"),
        (("quants", "Q4_K_M", "file"), "a\x1b[2J.gguf", "quants.Q4_K_M.file"),
        (("quants", "Q4_K_M", "repo"), "org/repo/../x", "quants.Q4_K_M.repo"),
        (("quants", "Q4_K_M", "repo"), "{{ org }}/r", "quants.Q4_K_M.repo"),
        (("hf_base_model",), "no-slash", "hf_base_model"),
        (("id",), "Gemma 3", "id"),
        (("family",), "[/x]", "family"),
        (("name",), "line\nbreak", "name"),
        (("notes",), "{% include '/etc/passwd' %}", "notes"),
        (("license", "url"), "javascript:alert(1)", "license.url"),
        (("license", "id"), "a b", "license.id"),
        (("default_quant",), "Q8_0", "(top level)"),  # not one of its quants
    ],
)
def test_catalog_values_out_of_bounds_are_refused_naming_the_field(
    path: tuple[str, ...], value: object, field: str
) -> None:
    _user_model("gemma-3-270m-it", _with("gemma-3-270m-it", path, value))
    with pytest.raises(InvalidDataFile) as info:
        load_catalog()
    assert info.value.problem.startswith(f"{field}:"), info.value.problem
    _one_line(info.value)


def test_a_hostile_quant_label_is_refused_and_quoted() -> None:
    data: Any = _shipped_yaml("gemma-3-270m-it")
    data["quants"]["[/x]\x1b"] = data["quants"]["Q4_K_M"]
    _user_model("gemma-3-270m-it", yaml.safe_dump(data))
    with pytest.raises(InvalidDataFile) as info:
        load_catalog()
    assert "quants.'[/x]\\x1b'" in _one_line(info.value)


@given(mutated("catalog", SMALL))
def test_mutated_catalog_entries_validate_or_fail_in_one_line(case: tuple[str, str]) -> None:
    stem, text = case
    try:
        model = parse_yaml_model(text, CatalogModel, f"{stem}.yaml")
    except InvalidDataFile as err:
        _one_line(err)
    else:
        assert 0 < model.params_b <= 100_000 and math.isfinite(model.params_b)
        assert model.default_quant in model.quants
        for qf in model.quants.values():
            assert not qf.file.startswith("/") and ".." not in qf.file.split("/")
            assert 0 < qf.bytes <= 64 << 40
        arch = model.arch.to_arch()
        assert arch.n_layer >= 1 and all(h >= 1 for h in arch.n_head_kv)


@given(random_document())
def test_random_catalog_documents_validate_or_fail_in_one_line(text: str) -> None:
    try:
        parse_yaml_model(text, CatalogModel, "r.yaml")
    except InvalidDataFile as err:
        _one_line(err)
