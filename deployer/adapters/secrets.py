"""API key files under the state dir: the SecretStore deploy and down use.

A key is generated here, written once (never over an existing file: a running server may read
it) with the tightest mode its reader allows, and removed with its 0700 folder.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path

from deployer.adapters.data_files import state_dir
from deployer.adapters.key_files import KeyFileProblem, key_file_message, read_key_file
from deployer.core.errors import InvalidRequest, KeyFileExists
from deployer.core.serve.deploy import CONTAINER_UID

KEY_FILE = "api_key"


class FileSecretStore:
    """Key files in `state_dir()/secrets/<name>/api_key` (deployer.core.serve.keys.SecretStore)."""

    def write_api_key(self, name: str, *, for_container: bool = True) -> Path:
        """Generate `name`'s key and store it; KeyFileExists when one is already there."""
        return write_api_key(name, for_container=for_container)

    def api_key_path(self, name: str) -> Path:
        """Where `name`'s key file is (or would be) kept."""
        return secrets_dir(name) / KEY_FILE

    def read_api_key(self, path: Path) -> str:
        """The key in the key file at `path` (adapters/key_files.py's rules)."""
        try:
            return read_key_file(path)
        except KeyFileProblem as exc:
            raise InvalidRequest(
                key_file_message("API key file", exc),
                # removing the file generates nothing: only a new deploy writes a key
                "It is a deployment's own key, written by deploy: take the deployment down "
                "('deployer down NAME') and deploy it again for a new one.",
            ) from None

    def discard(self, path: Path) -> None:
        """Remove the key file at `path` that write_api_key made, with its folder."""
        shutil.rmtree(path.parent, ignore_errors=True)

    def remove_generated(self, name: str, api_key_path: str | None) -> str | None:
        """Delete `name`'s generated key file; what was done, None when there is none."""
        return remove_generated_key(name, api_key_path)


def secrets_dir(name: str) -> Path:
    """Where a deployment's API key lives (under the state dir, 0700)."""
    return state_dir() / "secrets" / name


def write_api_key(name: str, *, for_container: bool = True) -> Path:
    """Generate a key, store it with the tightest mode its reader (container user or we) allows.

    An existing key file is never overwritten: it may be the one a running server reads.
    """
    folder = secrets_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise KeyFileExists(name, str(path)) from None
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32))
    if not for_container:
        return path  # a native server runs as this user: 0600 is enough
    if os.geteuid() == 0:
        os.chown(path, CONTAINER_UID, CONTAINER_UID)
    else:
        # Without root we cannot hand the file to uid 65534; the 0700 folder keeps other host
        # users out while the bind-mounted file stays readable inside the container.
        os.chmod(path, 0o644)
    return path


def remove_generated_key(name: str, api_key_path: str | None) -> str | None:
    """Delete the key file deploy generated for `name`; any other path is the user's and stays.

    What was done, as a line for the user; None when the record names no key.
    """
    if not api_key_path:
        return None
    ours = secrets_dir(name) / KEY_FILE
    if os.path.realpath(api_key_path) != os.path.realpath(ours):
        return f"API key file {api_key_path} is not one deploy generated; left alone"
    ours.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        ours.parent.rmdir()  # only when empty
    return "removed API key file"
