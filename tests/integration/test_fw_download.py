"""Payload download over real HTTP (uvicorn + Starlette FileResponse): cut at random offsets,
it resumes with Range + If-Range and verifies; a changed file restarts from zero."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from firmware_update.download import PayloadDownloader
from firmware_update.errors import BundleRejected, DownloadError, RejectReason
from tests.fw_http import CuttingProxy, file_app, random_budgets, run_asgi

pytestmark = pytest.mark.integration
SIZE = 3 * 1024 * 1024 + 17


@pytest.fixture
def http() -> Iterator[Callable[[], httpx.Client]]:
    """New clients (one per simulated process), all closed at the end."""
    clients: list[httpx.Client] = []

    def make() -> httpx.Client:
        clients.append(httpx.Client(timeout=10))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


def payload(tmp_path: Path) -> tuple[Path, str]:
    served = tmp_path / "served"
    served.mkdir()
    path = served / "bundle.payload"
    path.write_bytes(os.urandom(SIZE))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_download_cut_at_random_offsets_resumes_and_verifies(
    tmp_path: Path, http: Callable[[], httpx.Client], seed: int
) -> None:
    path, digest = payload(tmp_path)
    cuts = 12
    with (
        run_asgi(file_app(path.parent)) as port,
        CuttingProxy(port, random_budgets(seed, cuts, SIZE)) as proxy,
    ):
        downloader = PayloadDownloader(
            http(), attempts=5, backoff_s=0, free_margin=0, sync_every=256 * 1024
        )
        dest = tmp_path / "state" / "payload.part"
        downloader.fetch(f"http://127.0.0.1:{proxy.port}/files/bundle.payload", dest, SIZE, digest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest
    stats = downloader.stats
    # every cut was resumed with a 206, and no byte was fetched twice past the headers
    assert stats.resumed >= cuts - 1 and stats.restarted == 0
    assert stats.bytes_received == SIZE
    assert proxy.connections == stats.requests


def test_resume_after_process_death_continues_from_the_partial_file(
    tmp_path: Path, http: Callable[[], httpx.Client]
) -> None:
    path, digest = payload(tmp_path)
    dest = tmp_path / "state" / "payload.part"
    with run_asgi(file_app(path.parent)) as port, CuttingProxy(port, [SIZE // 3, 1]) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/files/bundle.payload"
        first = PayloadDownloader(http(), attempts=1, backoff_s=0, free_margin=0)
        with pytest.raises(DownloadError):
            _one_attempt(first, url, dest, digest)
        kept = dest.stat().st_size
        assert 0 < kept < SIZE
        second = PayloadDownloader(http(), free_margin=0)  # a new process
        second.fetch(url, dest, SIZE, digest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest
    assert second.stats.resumed == 1 and second.stats.bytes_received == SIZE - kept


def _one_attempt(downloader: PayloadDownloader, url: str, dest: Path, digest: str) -> None:
    """Download until the link stays down: the process then dies with a partial file."""
    downloader.attempts = 1
    downloader.fetch(url, dest, SIZE, digest)


def test_changed_file_restarts_from_zero_and_is_refused_if_not_the_signed_one(
    tmp_path: Path, http: Callable[[], httpx.Client]
) -> None:
    path, digest = payload(tmp_path)
    dest = tmp_path / "state" / "payload.part"
    with run_asgi(file_app(path.parent)) as port, CuttingProxy(port, [SIZE // 2, 1]) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/files/bundle.payload"
        with pytest.raises(DownloadError):  # the first attempt is cut
            _one_attempt(PayloadDownloader(http(), free_margin=0), url, dest, digest)
        path.write_bytes(os.urandom(SIZE))  # the server's file is replaced (new ETag)
        os.utime(path, (1, 1))
        again = PayloadDownloader(http(), free_margin=0)
        with pytest.raises(BundleRejected) as info:
            again.fetch(url, dest, SIZE, digest)
    assert info.value.reason is RejectReason.PAYLOAD_HASH
    assert again.stats.restarted == 1 and again.stats.resumed == 0
    assert not dest.exists()


def test_longer_than_signed_is_refused_without_writing_past_the_length(
    tmp_path: Path, http: Callable[[], httpx.Client]
) -> None:
    path, digest = payload(tmp_path)
    with run_asgi(file_app(path.parent)) as port:
        downloader = PayloadDownloader(http(), free_margin=0)
        dest = tmp_path / "state" / "payload.part"
        with pytest.raises(BundleRejected) as info:
            downloader.fetch(
                f"http://127.0.0.1:{port}/files/bundle.payload", dest, SIZE - 1, digest
            )
    assert info.value.reason is RejectReason.PAYLOAD_LENGTH
    assert not dest.exists() or dest.stat().st_size <= SIZE - 1


def test_free_space_is_checked_first(tmp_path: Path, http: Callable[[], httpx.Client]) -> None:
    downloader = PayloadDownloader(http(), free_margin=2**62)
    with pytest.raises(BundleRejected) as info:
        downloader.fetch("http://127.0.0.1:9/never", tmp_path / "p", SIZE, "0" * 64)
    assert info.value.reason is RejectReason.NO_SPACE
    assert downloader.stats.requests == 0
