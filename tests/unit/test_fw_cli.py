"""``homewatt-fw``: the release flow end to end on files, and its exit codes."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_update.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    k = tmp_path / "keys"
    assert run(capsys, "keygen", "--name", "release", "--out-dir", k)[0] == 0
    root = tmp_path / "root.json"
    assert run(capsys, "root", "--public", k / "release.pub", "--out", root)[0] == 0
    assert run(capsys, "sign", "--key", k / "release.key", tmp_path / "root.json")[0] == 0
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "agent").write_text("#!/bin/sh\necho hi\n")
    code, out, _ = run(capsys, "build", "--name", "homewatt-agent", "--version", "1.4.0",
                       "--kind", "app", "--hardware", "rpi4", "--hardware", "rpi3",
                       "--payload", tree, "--out-dir", tmp_path / "dist")
    assert code == 0 and "unsigned" in out
    manifest = tmp_path / "dist" / "homewatt-agent-1.4.0.manifest.json"
    assert run(capsys, "sign", "--key", k / "release.key", manifest)[0] == 0
    return {"keys": k, "root": tmp_path / "root.json", "manifest": manifest, "tree": tree,
            "payload": tmp_path / "dist" / "homewatt-agent-1.4.0.payload"}


def test_release_flow_verifies(release: dict[str, Path], capsys: pytest.CaptureFixture[str]
                               ) -> None:
    mode = stat.S_IMODE(os.stat(release["keys"] / "release.key").st_mode)
    assert mode == 0o600
    code, out, _ = run(capsys, "verify", "--root", release["root"], "--payload",
                       release["payload"], "--hardware", "rpi3", "--installed", "1.3.9",
                       release["manifest"])
    assert code == 0 and out.startswith("OK homewatt-agent 1.4.0")


def test_verify_rejections_exit_1_with_reason(release: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "verify", "--root", release["root"], "--installed", "1.4.0",
                       release["manifest"])
    assert code == 1 and "REJECTED downgrade" in err
    code, _, err = run(capsys, "verify", "--root", release["root"], "--hardware", "pc",
                       release["manifest"])
    assert code == 1 and "incompatible_hardware" in err
    bad_payload = tmp_path / "bad.payload"
    data = bytearray(release["payload"].read_bytes())
    data[100] ^= 0xFF
    bad_payload.write_bytes(bytes(data))
    code, _, err = run(capsys, "verify", "--root", release["root"], "--payload", bad_payload,
                       release["manifest"])
    assert code == 1 and "payload_hash" in err
    env = json.loads(release["manifest"].read_text())
    body = json.loads(base64.b64decode(env["payload"]))
    body["version"] = "9.9.9"
    env["payload"] = base64.b64encode(json.dumps(body).encode()).decode()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(env))
    code, _, err = run(capsys, "verify", "--root", release["root"], tampered)
    assert code == 1 and "bad_signature" in err


def test_bad_input_exits_2_with_one_line(release: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "build", "--name", "homewatt-agent", "--version", "1.4",
                       "--kind", "app", "--hardware", "rpi4", "--payload", release["tree"],
                       "--out-dir", tmp_path / "x")
    assert code == 2 and "--version: '1.4' is not a semantic version" in err
    code, _, err = run(capsys, "keygen", "--name", "release", "--out-dir", release["keys"])
    assert code == 2 and "already exists" in err
    code, _, err = run(capsys, "sign", "--key", release["keys"] / "release.key",
                       release["manifest"])
    assert code == 2 and "already signed" in err
    code, _, err = run(capsys, "sign", "--key", release["keys"] / "release.pub",
                       release["manifest"])
    assert code == 2 and "release.pub" in err
    code, _, err = run(capsys, "verify", "--root", tmp_path / "missing.json",
                       release["manifest"])
    assert code == 2 and "cannot read" in err


def test_inspect_says_it_did_not_verify(release: dict[str, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", release["manifest"])
    assert code == 0 and "NOT VERIFIED" in out and "1.4.0" in out and "rpi4, rpi3" in out


def test_build_is_reproducible(release: dict[str, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    os.utime(release["tree"] / "bin" / "agent", (1, 1))  # a different mtime: same tar
    run(capsys, "build", "--name", "homewatt-agent", "--version", "1.4.0", "--kind", "app",
        "--hardware", "rpi4", "--payload", release["tree"], "--out-dir", tmp_path / "again")
    again = tmp_path / "again" / "homewatt-agent-1.4.0.payload"
    assert again.read_bytes() == release["payload"].read_bytes()


def test_help_explains_itself() -> None:
    out = subprocess.run([sys.executable, "-m", "firmware_update.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "release flow" in out and "Exit codes" in out
    for command in ("keygen", "build", "sign", "root", "verify", "inspect"):
        assert command in out
