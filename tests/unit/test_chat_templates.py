"""A GGUF without a chat template is served in its family's format, not ChatML by default."""

from __future__ import annotations

import pytest

from deployer.core.model.chat_templates import OLLAMA_FORMATS, builtin_template, ollama_format
from deployer.core.model.facts import ModelArch


def _arch(name: str, n_vocab: int = 32000) -> ModelArch:
    return ModelArch(architecture=name, n_layer=1, n_embd=64, n_head=1, n_head_kv=[1],
                     head_dim_k=64, head_dim_v=64, n_ff=128, n_vocab=n_vocab, ctx_train=2048)  # fmt: skip


@pytest.mark.parametrize(
    ("arch", "n_vocab", "expected"),
    [
        ("gemma3", 262144, "gemma"),
        ("gemma2", 256000, "gemma"),
        ("qwen2", 151936, "chatml"),
        ("qwen3", 151936, "chatml"),
        ("llama", 128256, "llama3"),
        ("llama", 32768, "mistral-v3"),
        ("llama", 32000, "llama2"),
        ("phi3", 32064, "phi3"),
        ("gpt-oss", 201088, "gpt-oss"),
        ("some-new-arch", 50000, None),
    ],
)
def test_builtin_template_by_architecture(arch: str, n_vocab: int, expected: str | None) -> None:
    assert builtin_template(_arch(arch, n_vocab)) == expected


def test_ollama_formats_end_each_turn_with_their_stop_token() -> None:
    for name, fmt in OLLAMA_FORMATS.items():
        assert "{{ .Prompt }}" in fmt.template and "{{ .Response }}" in fmt.template, name
        assert all(stop in fmt.template for stop in fmt.stop), name
        assert '"""' not in fmt.template  # it is written inside a Modelfile's triple quotes
    assert ollama_format(_arch("gemma3", 262144)) is OLLAMA_FORMATS["gemma"]
    assert ollama_format(_arch("command-r", 256000)) is None  # llama.cpp name, no TEMPLATE here


def test_rendered_args_follow_the_gguf() -> None:
    """The demo GGUF has no template: --no-jinja then --chat-template gemma (the pinned build has
    Jinja on by default, which would read 'gemma' as the template's text); a catalog model
    (publishers' GGUFs carry theirs) keeps --jinja. A build without Jinja on by default gets no
    --no-jinja."""
    from deployer.cli import wiring
    from deployer.core.hardware.profiles import get_profile
    from deployer.core.serve.llama_flags import PINNED_BUILD
    from deployer.core.serve.render import llama_server_args

    cpu = get_profile("cpu-x86-16c-64gb")

    def args(model: str) -> list[str]:
        result = wiring.plan_for(model, cpu, quant=None, ctx=None, parallel=1, kv_type="f16",
                                 backend="llamacpp")  # fmt: skip
        return llama_server_args(result, build=build, model_arg="/m.gguf", host="127.0.0.1",
                                 port=8080, api_key_file=None)  # fmt: skip

    build = PINNED_BUILD
    demo = args("demo")
    assert demo[demo.index("--chat-template") + 1] == "gemma" and "--jinja" not in demo
    assert demo.index("--no-jinja") < demo.index("--chat-template")
    build = 4000
    old = args("demo")
    assert "--no-jinja" not in old and old[old.index("--chat-template") + 1] == "gemma"
    build = PINNED_BUILD
    catalog = args("qwen2.5-0.5b-instruct")
    assert "--jinja" in catalog and "--chat-template" not in catalog
