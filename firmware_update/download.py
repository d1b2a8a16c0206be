"""``PayloadDownloader``: fetch a payload over HTTP(S) with httpx, resuming where it stopped.

The partial file survives crashes and power cuts (fsynced every ``sync_every`` bytes); a
sidecar ``<file>.meta.json`` keeps the URL and the server's validator (strong ``ETag``, else
``Last-Modified``). A resume sends ``Range: bytes=N-`` with ``If-Range: <validator>``: a 206
continues at N, a 200 means the file changed (or the server ignores ranges), and the download
restarts from zero. Without a validator it restarts too: splicing two versions is never safe.

The signed length is enforced while downloading: nothing past ``size`` is ever written, a
longer body is refused, and the hash is computed as bytes arrive (on resume, the kept prefix
is re-hashed first). A free-space check comes before the first byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from firmware_update.durable import read_json, write_json
from firmware_update.errors import BundleRejected, DownloadError, RejectReason

__all__ = ["DownloadStats", "PayloadDownloader"]

log = logging.getLogger(__name__)
CHUNK = 64 * 1024
Progress = Callable[[int, int], None]


@dataclass
class DownloadStats:
    """Per ``fetch``: HTTP requests, resumed (206) and restarted (200 over a partial) ones."""

    requests: int = 0
    resumed: int = 0
    restarted: int = 0
    bytes_received: int = 0


@dataclass(frozen=True)
class _Target:
    url: str
    dest: Path
    size: int
    sha256: str

    @property
    def meta(self) -> Path:
        return self.dest.with_name(self.dest.name + ".meta.json")


class PayloadDownloader:
    """``client`` is an ``httpx.Client`` (tests pass one with a ``MockTransport`` or point it
    at a real server); ``attempts`` bounds consecutive attempts that made no progress."""

    def __init__(self, client: httpx.Client, *, attempts: int = 5, backoff_s: float = 1.0,
                 sync_every: int = 1024 * 1024, free_margin: int = 16 * 1024 * 1024,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.sync_every = sync_every
        self.free_margin = free_margin
        self.sleep = sleep
        self.stats = DownloadStats()

    def close(self) -> None:
        self.client.close()

    def fetch(self, url: str, dest: Path, size: int, sha256: str,
              progress: Progress | None = None) -> None:
        """Complete ``dest`` to exactly ``size`` bytes hashing to ``sha256``.

        Raises ``BundleRejected`` (PAYLOAD_LENGTH, PAYLOAD_HASH, NO_SPACE) when retrying
        cannot help, ``DownloadError`` after ``attempts`` attempts without progress.
        """
        target = _Target(url, dest, size, sha256)
        self.stats = DownloadStats()
        dest.parent.mkdir(parents=True, exist_ok=True)
        failures = 0
        while True:
            before = self._have(target)
            self._check_space(target, before)
            try:
                if self._attempt(target, progress):
                    return
            except (httpx.TransportError, DownloadError) as exc:
                log.warning("download of %s interrupted at %d/%d bytes: %s", url,
                            self._have(target), size, exc)
                last: Exception = exc
            else:
                last = DownloadError("the server closed the body early")
            failures = 0 if self._have(target) > before else failures + 1
            if failures >= self.attempts:
                raise DownloadError(f"{url}: no progress after {failures} attempts: {last}")
            self.sleep(self.backoff_s * min(2 ** failures, 30))

    # -- one HTTP request ------------------------------------------------------------------

    def _have(self, target: _Target) -> int:
        meta = read_json(target.meta)
        if not isinstance(meta, dict) or meta.get("url") != target.url:
            return 0
        try:
            return min(target.dest.stat().st_size, target.size)
        except FileNotFoundError:
            return 0

    def _check_space(self, target: _Target, have: int) -> None:
        free = shutil.disk_usage(target.dest.parent).free
        needed = target.size - have + self.free_margin
        if free < needed:
            raise BundleRejected(RejectReason.NO_SPACE,
                                 f"{free} bytes free in {target.dest.parent}, the download "
                                 f"needs {needed} (payload plus margin)")

    def _attempt(self, target: _Target, progress: Progress | None) -> bool:
        meta = read_json(target.meta)
        validator = meta.get("validator") if isinstance(meta, dict) else None
        offset = self._have(target) if validator else 0
        if offset == target.size and self._finish(target, _hash_prefix(target.dest, offset)):
            return True
        offset = 0 if offset == target.size else offset
        headers = {"Range": f"bytes={offset}-", "If-Range": str(validator)} if offset else {}
        self.stats.requests += 1
        with self.client.stream("GET", target.url, headers=headers) as response:
            if response.status_code == 206 and offset:
                _check_content_range(response, offset, target.size)
                self.stats.resumed += 1
            elif response.status_code == 200:
                self.stats.restarted += 1 if offset else 0
                offset = 0
                _check_length(response, target.size)
                write_json(target.meta, {"url": target.url, "validator": _validator(response)})
            elif response.status_code == 416:
                target.meta.unlink(missing_ok=True)  # our partial is wrong: start over
                raise DownloadError("416 range not satisfiable")
            else:
                raise DownloadError(f"HTTP {response.status_code} from {target.url}")
            digest = _hash_prefix(target.dest, offset)
            self._stream(response, target, offset, digest, progress)
        return self._finish(target, digest)

    def _stream(self, response: httpx.Response, target: _Target, offset: int,
                digest: hashlib._Hash, progress: Progress | None) -> None:
        mode = "r+b" if offset else "wb"
        if offset == 0:
            target.dest.unlink(missing_ok=True)
        with target.dest.open(mode) as out:
            out.seek(offset)
            out.truncate()
            unsynced = 0
            for chunk in response.iter_bytes():  # as they arrive: a cut loses nothing read
                if offset + len(chunk) > target.size:
                    raise BundleRejected(RejectReason.PAYLOAD_LENGTH,
                                         f"server sent more than the signed {target.size} "
                                         "bytes; refused")
                out.write(chunk)
                digest.update(chunk)
                offset += len(chunk)
                unsynced += len(chunk)
                self.stats.bytes_received += len(chunk)
                if unsynced >= self.sync_every:
                    out.flush()
                    os.fsync(out.fileno())
                    unsynced = 0
                if progress is not None:
                    progress(offset, target.size)
            out.flush()
            os.fsync(out.fileno())

    def _finish(self, target: _Target, digest: hashlib._Hash) -> bool:
        have = target.dest.stat().st_size if target.dest.exists() else 0
        if have < target.size:
            return False
        if digest.hexdigest() != target.sha256:
            discard(target.dest)
            raise BundleRejected(RejectReason.PAYLOAD_HASH,
                                 "downloaded payload's sha256 differs from the signed one; "
                                 "it was discarded and nothing was installed")
        return True


def discard(dest: Path) -> None:
    """Remove a partial download and its sidecar."""
    dest.unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        dest.with_name(dest.name + ".meta.json").unlink()


def _hash_prefix(path: Path, length: int) -> hashlib._Hash:
    digest = hashlib.sha256()
    if length:
        with path.open("rb") as src:
            remaining = length
            while remaining and (chunk := src.read(min(CHUNK * 16, remaining))):
                digest.update(chunk)
                remaining -= len(chunk)
    return digest


def _validator(response: httpx.Response) -> str | None:
    etag = response.headers.get("etag")
    if etag and not etag.startswith("W/"):  # If-Range needs a strong validator
        return str(etag)
    modified = response.headers.get("last-modified")
    return None if modified is None else str(modified)


def _check_length(response: httpx.Response, size: int) -> None:
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) != size:
        raise BundleRejected(RejectReason.PAYLOAD_LENGTH,
                             f"server offers {length} bytes, the manifest signed {size}")


def _check_content_range(response: httpx.Response, offset: int, size: int) -> None:
    value = response.headers.get("content-range", "")
    try:
        unit, rest = value.split(" ", 1)
        span, total = rest.split("/", 1)
        start = int(span.split("-", 1)[0])
    except ValueError as exc:
        raise DownloadError(f"bad Content-Range {value!r}") from exc
    if unit != "bytes" or start != offset:
        raise DownloadError(f"asked for bytes from {offset}, got {value!r}")
    if total != "*" and int(total) != size:
        raise BundleRejected(RejectReason.PAYLOAD_LENGTH,
                             f"server's file is {total} bytes, the manifest signed {size}")
