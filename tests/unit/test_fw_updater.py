"""The device updater with real directory slots, a fake health probe and an in-memory HTTP
server (httpx MockTransport): commit, rollback with the reason, rejection before install."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from firmware_update import keys
from firmware_update.errors import FirmwareError
from firmware_update.state import Phase
from firmware_update.updater import JobOffer
from tests.fw_helpers import Gateway, make_signer, signed_bundle

URL = "http://cloud.test/bundle"


class Server:
    """Serves one payload with ETag and Range, counting requests."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return httpx.Response(200, content=self.payload, headers={"ETag": '"p1"'})


def world(tmp_path: Path, version: str = "1.1.0", *, health: str = "ok",
          healthy: bool = True, **bundle: object) -> tuple[Gateway, Server, JobOffer]:
    ks, root = make_signer()
    built = signed_bundle(tmp_path / "release", ks, version, health=health, **bundle)
    server = Server(built.payload_path.read_bytes())
    gw = Gateway(tmp_path / "gw", root, httpx.Client(transport=httpx.MockTransport(server)),
                 healthy=healthy)
    return gw, server, JobOffer("job-1", built.manifest_path.read_bytes(), URL)


async def test_update_commits_after_a_healthy_trial(tmp_path: Path) -> None:
    gw, server, offer = world(tmp_path)
    assert await gw.updater.apply(offer) is Phase.TRIAL
    assert gw.restarter.reasons and gw.running_version() == "1.1.0"
    assert gw.reporter.final() == []  # nothing final before the new version proved itself
    assert await gw.restart().resume() is Phase.IDLE
    [(job, status, details)] = gw.reporter.final()
    assert (job, status, details["version"]) == ("job-1", "SUCCEEDED", "1.1.0")
    assert gw.updater.installed_version == "1.1.0"
    steps = [d.get("step") for _j, s, d in gw.reporter.reports if s == "IN_PROGRESS"]
    assert steps == ["downloading", "installing", "restarting", "health_check"]
    assert server.requests == 1


async def test_failing_health_check_rolls_back_and_reports_why(tmp_path: Path) -> None:
    gw, _server, offer = world(tmp_path, health="broken")
    await gw.updater.apply(offer)
    assert gw.running_version() == "1.1.0"
    await gw.restart().resume()  # trial start: health fails until the deadline
    assert gw.health.calls == 7  # every 5 s for 30 s, on the fake clock
    assert gw.running_version() == "1.0.0"  # switched back before the restart
    assert len(gw.restarter.reasons) == 2
    await gw.restart().resume()  # the old version starts and reports
    [(_job, status, details)] = gw.reporter.final()
    assert status == "FAILED" and details["reason"] == "health_check"
    assert "meters: no meter answered" in details["detail"]
    assert "rolled back to 1.0.0" in details["detail"]
    assert gw.updater.installed_version == "1.0.0" and gw.updater.phase is Phase.IDLE


async def test_new_version_that_keeps_crashing_is_given_up(tmp_path: Path) -> None:
    gw, _server, offer = world(tmp_path)
    await gw.updater.apply(offer)

    async def crash() -> None:
        raise RuntimeError("agent crashed during its health check")
    for _ in range(2):  # trial_boots = 2: each start dies before a verdict
        updater = gw.restart()
        updater.health.check = crash  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await updater.resume()
        assert gw.running_version() == "1.1.0"
    await gw.restart().resume()  # third start: the counter is spent
    assert gw.running_version() == "1.0.0"
    await gw.restart().resume()
    [(_job, status, details)] = gw.reporter.final()
    assert status == "FAILED" and details["reason"] == "trial_boots"


@pytest.mark.parametrize(("bundle", "reason"), [
    ({"hardware": ("rpi3",)}, "incompatible_hardware"),
    ({"version": "0.9.0"}, "downgrade"),
    ({"version": "1.0.0"}, "downgrade"),
])
async def test_rejected_bundle_is_never_downloaded(tmp_path: Path, bundle: dict[str, object],
                                                   reason: str) -> None:
    version = str(bundle.pop("version", "1.1.0"))
    gw, server, offer = world(tmp_path, version, **bundle)
    assert await gw.updater.apply(offer) is Phase.IDLE
    [(_job, status, details)] = gw.reporter.final()
    assert (status, details["reason"]) == ("REJECTED", reason)
    assert server.requests == 0 and not gw.restarter.reasons
    assert gw.running_version() == "1.0.0"
    assert not (gw.base / "app" / "slots" / "b").exists()


async def test_wrong_key_and_tampered_payload_are_rejected_before_install(tmp_path: Path
                                                                          ) -> None:
    gw, server, offer = world(tmp_path)
    intruder = signed_bundle(tmp_path / "evil", [keys.generate()], "1.2.0")
    await gw.updater.apply(JobOffer("job-evil", intruder.manifest_path.read_bytes(), URL))
    assert gw.reporter.final()[-1][2]["reason"] == "untrusted_key"
    assert server.requests == 0
    tampered = bytearray(server.payload)
    tampered[600] ^= 0x01
    server.payload = bytes(tampered)
    await gw.updater.apply(offer)
    status, details = gw.reporter.final()[-1][1:]
    assert (status, details["reason"]) == ("REJECTED", "payload_hash")
    assert gw.running_version() == "1.0.0" and not gw.restarter.reasons
    assert not (gw.base / "state" / "payload.part").exists()


async def test_outcome_is_kept_until_the_cloud_has_it(tmp_path: Path) -> None:
    gw, _server, offer = world(tmp_path, hardware=("pc",))
    gw.reporter.fail = True
    await gw.updater.apply(offer)
    assert await gw.updater.flush_report() is False
    gw.reporter.fail = False
    await gw.restart().resume()  # survives a restart too
    assert [r[1] for r in gw.reporter.final()] == ["REJECTED"]
    assert await gw.updater.flush_report() is True


async def test_a_second_job_while_busy_is_refused(tmp_path: Path) -> None:
    gw, _server, offer = world(tmp_path)
    await gw.updater.apply(offer)
    with pytest.raises(FirmwareError, match="busy"):
        await gw.updater.apply(JobOffer("job-2", offer.manifest, URL))


async def test_downgrade_after_commit_is_refused(tmp_path: Path) -> None:
    gw, _server, offer = world(tmp_path)
    await gw.updater.apply(offer)
    await gw.restart().resume()
    again = await gw.updater.apply(JobOffer("job-again", offer.manifest, URL))
    assert again is Phase.IDLE
    assert gw.reporter.final()[-1][2]["reason"] == "downgrade"
