"""A minimal Hugging Face Hub on 127.0.0.1 that the real huggingface_hub talks to.

It serves what the library needs to list, probe and download files: resolve (HEAD/GET with
Range), model info with LFS metadata, the file tree, and typed errors via X-Error-Code. It
counts the bytes it serves per file so tests can prove what was (not) downloaded.

A repo's `lies` make it a hostile Hub for tests of untrusted input: a listing whose commit,
sha256, sizes or extra entries say what the bytes do not, a lying X-Repo-Commit or
Content-Length. File names are served as given, so traversal and template syntax in names need
no switch.

Tests get one through the `hub` fixture in conftest.py (built on `running_hub`).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

_RESOLVE_RE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_API_RE = re.compile(r"^/api/models/([^/]+/[^/]+?)(?:/revision/([^/]+)|/tree/([^/]+))?/?$")
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CHUNK = 1024 * 1024
_SLOW_CHUNK = 64 * 1024


@dataclass
class Lies:
    """What a hostile Hub misstates about one repo; each value is sent exactly as given."""

    commit: object = None  # the listing's `sha`
    header_commit: str | None = None  # X-Repo-Commit of every resolve answer
    sha256: dict[str, object] = field(default_factory=dict)  # listing lfs.sha256, per file
    size: dict[str, object] = field(default_factory=dict)  # listing size and lfs.size, per file
    blob_id: dict[str, object] = field(default_factory=dict)  # listing blobId, per file
    siblings: list[Any] = field(default_factory=list)  # raw extra listing entries
    content_length_delta: int = 0  # added to the Content-Length of every GET (bytes unchanged)


@dataclass
class HubRepo:
    """One model repo: its files, commit and whether it is gated."""

    repo_id: str
    files: dict[str, Path]
    gated: bool = False
    commit: str = ""
    _sha256: dict[str, str] = field(default_factory=dict)
    lies: Lies = field(default_factory=Lies)

    def sha256(self, name: str) -> str:
        """The file's sha256 (computed once)."""
        if name not in self._sha256:
            digest = hashlib.sha256()
            with self.files[name].open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
            self._sha256[name] = digest.hexdigest()
        return self._sha256[name]


class LoopbackHub:
    """A Hub-compatible HTTP server on a free loopback port."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.bytes_served: Counter[str] = Counter()
        self.requests: list[tuple[str, str]] = []
        # Fault switches, keyed "repo_id/name": bytes per second for that file (all
        # connections together), close each response after N bytes, or flip bytes in transit.
        self.throttle_bps: dict[str, int] = {}
        self.cut_after: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self._next_send: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL, for HF_ENDPOINT."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_repo(self, repo_id: str, files: dict[str, Path], gated: bool = False) -> HubRepo:
        """Serve `files` (name in repo -> local path) as model repo `repo_id`."""
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        repo = HubRepo(repo_id, dict(files), gated, commit)
        self.repos[repo_id] = repo
        return repo

    def served(self, repo_id: str, name: str) -> int:
        """Bytes of file content sent for repo_id/name so far."""
        return self.bytes_served[f"{repo_id}/{name}"]

    def start(self) -> LoopbackHub:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()

    def pace(self, key: str, n: int) -> None:
        """Sleep as long as the file's throttle asks before sending n more bytes."""
        rate = self.throttle_bps.get(key)
        if not rate:
            return
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next_send.get(key, now))
            self._next_send[key] = at + n / rate
        if at > now:
            time.sleep(at - now)

    def count(self, key: str, n: int) -> None:
        """Record n bytes served for key (thread-safe)."""
        with self._lock:
            self.bytes_served[key] += n


def _make_handler(hub: LoopbackHub) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        pass

    Handler.hub = hub
    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    hub: LoopbackHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append((self.command, path))
        if path == "/_stats" and not head:  # bytes served per file, for out-of-process users
            self._json(dict(self.hub.bytes_served))
        elif match := _RESOLVE_RE.match(path):
            self._resolve(match.group(1), match.group(2), match.group(3), head)
        elif (match := _API_RE.match(path)) and not head:
            repo_id, revision, tree_rev = match.groups()
            if tree_rev is not None:
                self._tree(repo_id, tree_rev)
            else:
                self._info(repo_id, revision or "main")
        else:
            self._error(404, "EntryNotFound", head)

    def _repo(self, repo_id: str, revision: str, head: bool) -> HubRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", head)
            return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", head)
            return None
        return repo

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id, revision, head=False)
        if repo is None:
            return
        lies = repo.lies
        siblings: list[Any] = [
            {
                "rfilename": name,
                "size": lies.size.get(name, path.stat().st_size),
                "blobId": lies.blob_id.get(name, hashlib.sha1(name.encode()).hexdigest()),
                "lfs": {
                    "size": lies.size.get(name, path.stat().st_size),
                    "sha256": lies.sha256.get(name, repo.sha256(name)),
                    "pointerSize": 134,
                },
            }
            for name, path in sorted(repo.files.items())
        ]
        siblings += lies.siblings
        body = {
            "_id": repo.commit[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.commit if lies.commit is None else lies.commit,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": ["gguf"],
            "siblings": siblings,
        }
        self._json(body)

    def _tree(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id, revision, head=False)
        if repo is None:
            return
        entries: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for name, path in sorted(repo.files.items()):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
            size = path.stat().st_size
            entries.append(
                {
                    "type": "file",
                    "oid": hashlib.sha1(name.encode()).hexdigest(),
                    "size": size,
                    "path": name,
                    "lfs": {"oid": repo.sha256(name), "size": size, "pointerSize": 134},
                }
            )
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in dirs]
        self._json(entries)

    def _resolve(self, repo_id: str, revision: str, name: str, head: bool) -> None:
        repo = self._repo(repo_id, revision, head)
        if repo is None:
            return
        if repo.gated:
            self._error(403, "GatedRepo", head)
            return
        if name not in repo.files:
            self._error(404, "EntryNotFound", head)
            return
        path = repo.files[name]
        size = path.stat().st_size
        start, end = 0, size - 1
        status = 200
        ranged = self.headers.get("Range")
        if ranged and not head:
            match = _RANGE_RE.match(ranged.strip())
            if match is None or int(match.group(1)) >= size:
                self._error(416, "RangeNotSatisfiable", head)
                return
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            status = 206
        sha = repo.sha256(name)
        self.send_response(status)
        self.send_header("X-Repo-Commit", repo.lies.header_commit or repo.commit)
        self.send_header("ETag", f'"{sha}"')
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        length = end - start + 1
        self.send_header(
            "Content-Length", str(length + (0 if head else repo.lies.content_length_delta))
        )
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        if repo.lies.content_length_delta:
            self.close_connection = True  # what follows a lying body must not be read as a reply
        self._send_file(f"{repo_id}/{name}", path, start, length)

    def _send_file(self, key: str, path: Path, start: int, length: int) -> None:
        throttled = key in self.hub.throttle_bps
        step = _SLOW_CHUNK if throttled else _CHUNK
        budget = self.hub.cut_after.get(key)
        with path.open("rb") as fh:
            fh.seek(start)
            while length > 0:
                if budget is not None and budget <= 0:
                    self.close_connection = True
                    break  # cut: the client sees a short body
                want = min(step, length) if budget is None else min(step, length, budget)
                chunk = fh.read(want)
                if not chunk:
                    break
                if key in self.hub.corrupt:
                    chunk = bytes(b ^ 0x5A for b in chunk)
                if budget is not None:
                    budget -= len(chunk)
                self.hub.pace(key, len(chunk))
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break  # the client stopped reading: what it got is what counts
                self.hub.count(key, len(chunk))
                length -= len(chunk)

    def _json(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, head: bool) -> None:
        data = b"" if head else json.dumps({"error": code}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)


def running_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackHub]:
    """Start a LoopbackHub and point huggingface_hub at it for one test."""
    hub = LoopbackHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    # huggingface_hub reads HF_ENDPOINT once, at import: patch what it derived from it.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    try:
        yield hub
    finally:
        hub.stop()
