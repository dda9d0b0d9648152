"""Ollama's create flow against the API contract (Ollama cannot run on this machine)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.adapters.ollama import OllamaClient, OllamaError, create_from_gguf, sha256_digest
from deployer.core.errors import ExternalUnavailable
from tests.integration.ollama_contract import OllamaContract, serve


@pytest.fixture
def ollama() -> Iterator[tuple[OllamaContract, OllamaClient]]:
    contract = OllamaContract()
    server, url = serve(contract)
    yield contract, OllamaClient(url)
    server.shutdown()


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-Q4_K_M.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return path


def test_contract_create_uploads_once_and_creates(ollama: tuple[OllamaContract, OllamaClient],
                                                  gguf: Path) -> None:  # fmt: skip
    contract, client = ollama
    first = create_from_gguf(client, "demo", gguf, num_ctx=4096, num_gpu=19)
    assert first["uploaded"] is True and first["version"] == contract.version
    assert contract.blobs == {sha256_digest(gguf): gguf.stat().st_size}
    assert contract.models["demo:latest"]["files"] == {gguf.name: sha256_digest(gguf)}
    assert contract.models["demo:latest"]["parameters"] == {"num_ctx": 4096, "num_gpu": 19}
    second = create_from_gguf(client, "demo-2", gguf, num_ctx=2048)
    assert second["uploaded"] is False
    posts = [p for m, p in contract.requests if m == "POST" and p.startswith("/api/blobs/")]
    assert len(posts) == 1


def test_contract_digest_mismatch_is_refused(ollama: tuple[OllamaContract, OllamaClient],
                                             gguf: Path) -> None:  # fmt: skip
    _, client = ollama
    wrong = "sha256:" + "0" * 64
    with pytest.raises(OllamaError) as err:
        client.push_blob(gguf, wrong)
    assert err.value.status == 400 and "digest" in err.value.message()


def test_contract_create_without_blob_is_refused(
    ollama: tuple[OllamaContract, OllamaClient],
) -> None:
    _, client = ollama
    with pytest.raises(OllamaError) as err:
        client.create("x", files={"m.gguf": "sha256:" + "1" * 64})
    assert "blobs missing" in err.value.message()


def test_contract_server_down_is_unavailable_not_not_found() -> None:
    client = OllamaClient("http://127.0.0.1:9", timeout_s=1)
    with pytest.raises(ExternalUnavailable):
        client.wait_ready(timeout_s=0.3, poll_s=0.1)
