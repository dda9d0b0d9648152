"""A chat format for a GGUF that carries no chat template.

Most GGUFs carry `tokenizer.chat_template` and both servers use it as it is (llama-server with
`--jinja`, Ollama by reading it). A GGUF without one (converted from a base checkpoint, or
stripped, like the demo model) would be prompted in llama-server's fallback, ChatML, which most
families were never trained on: a Gemma model then answers with ChatML markers or echoes the
question. For those files the renderer names the family's format instead:

- llama-server: one of its built-in templates by name (`--chat-template NAME`, without
  `--jinja`: in Jinja mode the name itself would be read as a template);
- Ollama: a Modelfile TEMPLATE and the turn-end stop token, for the families written below.

The family is read from the GGUF's architecture key (llama.cpp's names) and, for `llama`,
from the vocabulary size, which tells Llama 3 (128256) from Llama 2 and Mistral v0.1 (32000)
and Mistral v0.3 (32768). Built-in names are those of llama.cpp's src/llama-chat.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.core.model.facts import ModelArch

_BY_ARCH: dict[str, str] = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "qwen": "chatml",
    "qwen2": "chatml",
    "qwen2moe": "chatml",
    "qwen3": "chatml",
    "qwen3moe": "chatml",
    "phi3": "phi3",
    "phimoe": "phi3",
    "command-r": "command-r",
    "cohere2": "command-r",
    "deepseek": "deepseek",
    "deepseek2": "deepseek3",
    "exaone": "exaone3",
    "exaone4": "exaone4",
    "granite": "granite",
    "granitemoe": "granite",
    "chatglm": "chatglm4",
    "glm4": "chatglm4",
    "minicpm": "minicpm",
    "llama4": "llama4",
    "gpt-oss": "gpt-oss",
    "hunyuan-moe": "hunyuan-moe",
    "hunyuan-dense": "hunyuan-dense",
    "smollm3": "chatml",
}


def builtin_template(arch: ModelArch) -> str | None:
    """llama-server's built-in template for this architecture, or None when unknown."""
    if arch.architecture == "llama":
        if arch.n_vocab >= 128000:
            return "llama3"
        if arch.n_vocab == 32768:
            return "mistral-v3"
        return "llama2"
    return _BY_ARCH.get(arch.architecture)


@dataclass(frozen=True)
class OllamaFormat:
    """A Modelfile TEMPLATE (Ollama's Go template, one turn) and the tokens that end a turn."""

    template: str
    stop: tuple[str, ...]


# Written per format from its documented turn markers; .System/.Prompt/.Response are Ollama's
# per-turn variables.
OLLAMA_FORMATS: dict[str, OllamaFormat] = {
    "gemma": OllamaFormat(
        "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}"
        "<end_of_turn>\n<start_of_turn>model\n{{ .Response }}<end_of_turn>\n",
        ("<end_of_turn>",),
    ),
    "chatml": OllamaFormat(
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
        "{{ .Response }}<|im_end|>\n",
        ("<|im_end|>",),
    ),
    "llama3": OllamaFormat(
        "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}"
        "<|eot_id|>{{ end }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>",
        ("<|eot_id|>",),
    ),
    "phi3": OllamaFormat(
        "{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}<|user|>\n{{ .Prompt }}"
        "<|end|>\n<|assistant|>\n{{ .Response }}<|end|>\n",
        ("<|end|>",),
    ),
}


def ollama_format(arch: ModelArch) -> OllamaFormat | None:
    """The Modelfile TEMPLATE and stops for this architecture, or None when not written here."""
    name = builtin_template(arch)
    return OLLAMA_FORMATS.get(name) if name else None
