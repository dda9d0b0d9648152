"""Fixed values the rendered files and the code share: the container user, paths inside the
container, health-check timings. Templates print these from their context, never as literals.
"""

from __future__ import annotations

from pathlib import PurePosixPath

# The user every container runs as: "nobody" of the official images and of ours (image.py).
NOBODY_UID = 65534
NOBODY = f"{NOBODY_UID}:{NOBODY_UID}"
# The one-shot volume-init container runs as root with only CAP_CHOWN.
ROOT_USER = "0:0"

CONTAINER_PORT = {"llamacpp": 8080, "ollama": 11434}
# Ollama answers /api/version once up (it has no /health); llama-server /health only once the
# model is loaded (503 while it loads).
HEALTH_PATH = {"llamacpp": "/health", "ollama": "/api/version"}
MODEL_DIR = PurePosixPath("/models")
ADAPTER_DIR = PurePosixPath("/adapters")  # LoRA adapters, mounted read-only like the model
API_KEY_IN_CONTAINER = "/run/secrets/api_key"
# The name systemd hands the API key file over as (LoadCredential=, read at %d/NAME).
CREDENTIAL = "api_key"
# Where the compose Ollama service reads the rendered Modelfile (create.sh, fleet deploy).
MODELFILE = "Modelfile"
MODELFILE_IN_CONTAINER = f"/deployer/{MODELFILE}"

# The one short chat completion the README's curl line and the fleet smoke test send.
SMOKE_PROMPT = "Say hello."
SMOKE_MAX_TOKENS = 8

# The only writable place in a read-only root filesystem besides a named volume.
TMP_DIR = "/tmp"
TMP_SIZE_MIB = 64
OLLAMA_TMP_SIZE_MIB = 256  # Ollama unpacks its runners there


def tmpfs_options(size_mib: int) -> str:
    """Docker's tmpfs options for a writable, size-capped /tmp."""
    return f"rw,size={size_mib}m"


# The container health check (compose, the ContainerSpec) and the k8s readiness probe.
HEALTH_INTERVAL_S = 10
HEALTH_TIMEOUT_S = 5
HEALTH_RETRIES = 3
# k8s: the startup probe polls this often (its failure threshold covers the load time), the
# liveness probe this often.
STARTUP_PERIOD_S = 5
LIVENESS_PERIOD_S = 20

# The native watchdogs (systemd timer, launchd agent): a probe every WATCHDOG_EVERY_S that
# restarts the server when it does not answer at all within WATCHDOG_MAX_TIME_S.
WATCHDOG_EVERY_S = 30
WATCHDOG_MAX_TIME_S = 10
WATCHDOG_ACCURACY_S = 5
# systemd: ExecStartPost polls /health every READY_POLL_S (each try at most READY_MAX_TIME_S)
# until the load time is over; TimeoutStartSec leaves START_GRACE_S more.
READY_POLL_S = 2
READY_MAX_TIME_S = 5
START_GRACE_S = 30
STOP_TIMEOUT_S = 30
RESTART_DELAY_S = 5
# launchd restarts a server that exits at most this often.
LAUNCHD_THROTTLE_S = 10

# k8s: the pod that copies the weights into the volume, how long to wait for it, the room the
# volume gets beyond the file, and how much longer than the load a rollout may take.
LOADER_IMAGE = "docker.io/library/busybox:1.36"
LOADER_COMMAND = ["sleep", "3600"]
LOADER_WAIT_S = 300
PVC_HEADROOM_PCT = 10
ROLLOUT_GRACE_S = 60
