"""The smoke-test adapter against the runtime image, the container driven by testcontainers.

Independent of deployer's own engine adapter: testcontainers starts the locally built
llama-server image with the demo model mounted read-only and an API key file, and the test
checks what `chat_smoke_test` and `completion_smoke_test` report (the demo, a base model,
continues the count), and that a wrong key is refused as a clear failure.
Ryuk (testcontainers' reaper) is off: its image cannot be pulled here; the context manager
removes the container.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from deployer.adapters.smoke import chat_smoke_test, completion_smoke_test
from deployer.core.errors import SmokeTestFailed
from deployer.core.serve.proof import COMPLETION_EXPECTED
from tests.integration.dockerkit import TEST_LABEL
from tests.integration.loopback import wait_http_200

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
tc = pytest.importorskip("testcontainers.core.container")

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def keyed_server(
    runtime_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    from deployer.adapters.local_models import demo_model_path

    model = demo_model_path()
    key = secrets.token_urlsafe(24)
    key_dir = tmp_path_factory.mktemp("key")
    key_file = key_dir / "api_key"
    key_file.write_text(key)
    key_file.chmod(0o644)  # read by the image's user (65534)
    container = (
        tc.DockerContainer(runtime_image)
        .with_volume_mapping(str(model), "/models/demo.gguf", "ro")
        .with_volume_mapping(str(key_file), "/run/secrets/api_key", "ro")
        .with_exposed_ports(8080)
        .with_kwargs(labels={TEST_LABEL: "smoke-tc"})
        .with_command(
            [
                "-m",
                "/models/demo.gguf",
                "--host",
                "0.0.0.0",
                "--port",
                "8080",
                "-c",
                "2048",
                "--alias",
                "demo",
                "--api-key-file",
                "/run/secrets/api_key",
            ]
        )
    )
    with container:
        host = container.get_container_host_ip()
        if host in ("localhost", "0.0.0.0"):
            host = "127.0.0.1"
        endpoint = f"http://{host}:{container.get_exposed_port(8080)}"
        assert wait_http_200(f"{endpoint}/health"), "the server never became healthy"
        yield endpoint, key


def test_smoke_reports_tokens_and_the_servers_timings(keyed_server: tuple[str, str]) -> None:
    endpoint, key = keyed_server
    result = chat_smoke_test(endpoint, model="demo", api_key=key, max_tokens=8)
    assert 0 < result.completion_tokens <= 8
    assert result.text.strip()
    assert result.tokens_per_s is not None and result.tokens_per_s > 0
    assert result.time_to_first_token_ms is not None and result.time_to_first_token_ms > 0
    assert result.seconds > 0


def test_smoke_with_a_wrong_key_fails_clearly(keyed_server: tuple[str, str]) -> None:
    endpoint, _ = keyed_server
    with pytest.raises(SmokeTestFailed) as err:
        chat_smoke_test(endpoint, model="demo", api_key="not-the-key", max_tokens=8)
    assert "401" in err.value.message()
    with pytest.raises(SmokeTestFailed):
        chat_smoke_test(endpoint, model="demo", api_key=None, max_tokens=8)


def test_completion_proof_of_the_base_demo_continues_the_count(
    keyed_server: tuple[str, str],
) -> None:
    endpoint, key = keyed_server
    for _ in range(3):  # greedy decoding: the same answer every time, not a lucky one
        result = completion_smoke_test(endpoint, model="demo", api_key=key)
        assert result.kind == "completion" and result.expected == COMPLETION_EXPECTED
        assert result.matched is True, result.text
        assert 0 < result.completion_tokens <= 8
        assert result.tokens_per_s is not None and result.tokens_per_s > 0
    with pytest.raises(SmokeTestFailed):
        completion_smoke_test(endpoint, model="demo", api_key="not-the-key")
