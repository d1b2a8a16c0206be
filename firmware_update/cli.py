"""``homewatt-fw``: keys, bundles and trust roots for homewatt firmware updates.

Typical release flow::

    homewatt-fw keygen --name release --out-dir keys/          # once; keep release.key offline
    homewatt-fw root --public keys/release.pub --threshold 1 --out root.json
    homewatt-fw sign --key keys/release.key root.json           # ship root.json in the image
    homewatt-fw build --name homewatt-agent --version 1.4.0 --kind app --hardware rpi4 \\
        --payload build/agent-tree --out-dir dist/
    homewatt-fw sign --key keys/release.key dist/homewatt-agent-1.4.0.manifest.json
    homewatt-fw verify --root root.json --payload dist/homewatt-agent-1.4.0.payload \\
        --hardware rpi4 dist/homewatt-agent-1.4.0.manifest.json

Exit codes: 0 ok, 1 verification failed (the reason is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from firmware_update import keys
from firmware_update.bundle import build_bundle, hash_file
from firmware_update.envelope import MANIFEST_TYPE, ROOT_TYPE, Envelope, verified_payload
from firmware_update.errors import BadInput, BundleRejected, FirmwareError
from firmware_update.manifest import PAYLOAD_KINDS, parse_manifest
from firmware_update.policy import DeviceFacts, check_manifest, check_payload
from firmware_update.semver import parse_version
from firmware_update.trust import TrustRoot, load_initial_root

EXIT_OK, EXIT_REJECTED, EXIT_BAD_INPUT = 0, 1, 2


def _version() -> str:
    try:
        return version("homewatt")
    except PackageNotFoundError:
        return "unknown (not installed as a distribution)"


def _progress(label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        print(f"\r{label}: {done / 1e6:.1f}/{total / 1e6:.1f} MB ({pct}%)", end="",
              file=sys.stderr, flush=True)
        if done >= total:
            print(file=sys.stderr)
    return show


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from exc


def cmd_keygen(args: argparse.Namespace) -> int:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    key = keys.generate()
    private, public = args.out_dir / f"{args.name}.key", args.out_dir / f"{args.name}.pub"
    keys.save(key, private, public)
    print(f"private key {private} (mode 0600: keep it offline)")
    print(f"public key  {public}")
    print(f"key id      {key.public.keyid}")
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    parse_version(args.version, "--version")
    if args.min_version:
        parse_version(args.min_version, "--min-version")
    built = build_bundle(name=args.name, version=args.version, kind=args.kind,
                         hardware=args.hardware, payload=args.payload, out_dir=args.out_dir,
                         expires_in=timedelta(days=args.expires_in_days),
                         min_version=args.min_version, allow_downgrade=args.allow_downgrade,
                         description=args.description, progress=_progress("hashing payload"))
    m = built.manifest
    print(f"payload  {built.payload_path} ({m.payload.size} bytes, sha256 {m.payload.sha256})")
    print(f"manifest {built.manifest_path} (unsigned; next: homewatt-fw sign --key K "
          f"{built.manifest_path})")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    envelope = Envelope.from_bytes(_read(args.envelope))
    key = keys.load_private(args.key)
    envelope.sign(key)
    target = args.out or args.envelope
    target.write_bytes(envelope.to_bytes())
    print(f"signed {target} with key {key.public.keyid} "
          f"({len(envelope.signatures)} signature(s))")
    return EXIT_OK


def cmd_root(args: argparse.Namespace) -> int:
    public = [keys.load_public(p) for p in args.public]
    expires = (datetime.now(UTC) + timedelta(days=args.expires_in_days)
               if args.expires_in_days else None)
    try:
        root = TrustRoot.of(public, args.threshold, args.version, expires)
    except ValueError as exc:
        raise BadInput(f"--threshold/--public: {exc}") from exc
    args.out.write_bytes(root.envelope().to_bytes())
    print(f"trust root v{root.version}: {len(root.keys)} key(s), threshold {root.threshold} "
          f"-> {args.out} (unsigned; sign it with the keys"
          f"{' of this and the previous root' if root.version > 1 else ''})")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    root = load_initial_root(Envelope.from_bytes(_read(args.root)))
    envelope = Envelope.from_bytes(_read(args.manifest))
    # signatures first; only then are the manifest's fields read (defaults come from them)
    manifest = parse_manifest(verified_payload(envelope, MANIFEST_TYPE, root.public_keys(),
                                               root.threshold))
    installed = parse_version(args.installed, "--installed") if args.installed else None
    facts = DeviceFacts(product=args.product or manifest.name, kind=args.kind or manifest.kind,
                        hardware=args.hardware or manifest.compatible_hardware[0],
                        now=datetime.now(UTC), installed=installed, minimum=installed,
                        blocklist=frozenset(args.blocklist or ()))
    check_manifest(manifest, facts)
    if args.payload is not None:
        size, digest = hash_file(args.payload, _progress("hashing payload"))
        check_payload(manifest, size, digest)
    print(f"OK {manifest.name} {manifest.version} ({manifest.kind}) for "
          f"{facts.hardware}; expires {manifest.expires.isoformat()}")
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    envelope = Envelope.from_bytes(_read(args.envelope))
    print(f"type        {envelope.payload_type}")
    for keyid, _sig in envelope.signatures:
        print(f"signed by   {keyid}")
    if not envelope.signatures:
        print("signed by   nobody (unsigned)")
    print("NOT VERIFIED: inspect shows what the file claims; use `homewatt-fw verify`.")
    if envelope.payload_type == MANIFEST_TYPE:
        m = parse_manifest(envelope.payload)
        rows = [("name", m.name), ("version", m.version), ("kind", m.kind),
                ("hardware", ", ".join(m.compatible_hardware)),
                ("payload", f"{m.payload.size} bytes sha256 {m.payload.sha256}"),
                ("created", m.created.isoformat()), ("expires", m.expires.isoformat()),
                ("min_version", m.min_version or "-"), ("downgrade", str(m.allow_downgrade))]
        for label, value in rows:
            print(f"{label:<11} {value}")
    elif envelope.payload_type == ROOT_TYPE:
        print(envelope.payload.decode(errors="replace"))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="homewatt-fw", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("version", help="print the homewatt version this tool belongs to")
    p = sub.add_parser("keygen", help="create an Ed25519 signing key pair")
    p.add_argument("--name", default="release", help="file stem: NAME.key and NAME.pub")
    p.add_argument("--out-dir", type=Path, default=Path())
    p = sub.add_parser("build", help="pack a payload and write its unsigned manifest")
    p.add_argument("--name", required=True, help="product, e.g. homewatt-agent")
    p.add_argument("--version", required=True, help="semantic version, e.g. 1.4.0")
    p.add_argument("--kind", choices=PAYLOAD_KINDS, required=True,
                   help="app: agent software tree (directory slots); rauc: a .raucb image")
    p.add_argument("--hardware", action="append", required=True,
                   help="compatible hardware id (repeat for several), e.g. rpi4")
    p.add_argument("--payload", type=Path, required=True, help="a directory or a file")
    p.add_argument("--out-dir", type=Path, default=Path("dist"))
    p.add_argument("--expires-in-days", type=float, default=90.0)
    p.add_argument("--min-version", help="only install over this version or later")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="signed permission to install at or below a device's minimum")
    p.add_argument("--description", default="")
    p = sub.add_parser("sign", help="add a signature to a manifest or trust root")
    p.add_argument("--key", type=Path, required=True, help="private key from keygen")
    p.add_argument("--out", type=Path, help="write here instead of in place")
    p.add_argument("envelope", type=Path)
    p = sub.add_parser("root", help="write an unsigned trust root (the keys devices trust)")
    p.add_argument("--public", type=Path, action="append", required=True)
    p.add_argument("--threshold", type=int, default=1, help="signatures a bundle needs")
    p.add_argument("--version", type=int, default=1, help="previous root's version + 1")
    p.add_argument("--expires-in-days", type=float, default=0, help="0: never")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("verify", help="check a manifest (and payload) as a device would")
    p.add_argument("--root", type=Path, required=True, help="the device's trust root")
    p.add_argument("--payload", type=Path, help="also check the payload's length and hash")
    p.add_argument("--hardware", help="device hardware id (default: the first listed)")
    p.add_argument("--product", help="device product (default: the manifest's)")
    p.add_argument("--kind", choices=PAYLOAD_KINDS, help="device slot kind")
    p.add_argument("--installed", help="version the device runs (anti-rollback minimum)")
    p.add_argument("--blocklist", action="append", help="a known-bad version (repeatable)")
    p.add_argument("manifest", type=Path)
    p = sub.add_parser("inspect", help="show what a manifest or root claims (no checks)")
    p.add_argument("envelope", type=Path)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "keygen": cmd_keygen, "build": cmd_build, "sign": cmd_sign, "root": cmd_root,
    "verify": cmd_verify, "inspect": cmd_inspect,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(_version())
        return EXIT_OK
    try:
        return COMMANDS[args.command](args)
    except BundleRejected as exc:
        if args.command == "verify":
            print(f"REJECTED {exc}", file=sys.stderr)
            return EXIT_REJECTED
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FirmwareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
