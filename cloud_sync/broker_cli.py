"""``homewatt-cloud ca ...`` and ``homewatt-cloud broker-config``: the CA and the broker's
TLS/ACL configuration (see :mod:`cloud_sync.ca` and :mod:`cloud_sync.broker_config`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cloud_sync.broker_config import (
    CLAIM_IDENTITY,
    CLOUD_IDENTITY,
    BrokerLayout,
    write_broker_config,
)
from cloud_sync.ca import CertificateAuthority, key_pem, write_private, write_public
from cloud_sync.settings import CloudSettings

COMMANDS = ("ca", "broker-config")


def add_broker_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = sub.add_parser(
        "ca", help="the certificate authority that signs gateway and broker certificates",
        description="The CA lives in --ca-dir (default HOMEWATT_CA_DIR, else <data_dir>/ca): "
                    "ca.crt (give it to gateways and the broker) and ca.key (mode 0600; the "
                    "cloud's provisioning service signs gateway certificates with it).")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)
    init = ca_sub.add_parser("init", help="create the root CA (refuses to overwrite one)")
    init.add_argument("--ca-dir", type=Path)
    init.add_argument("--name", default="homewatt root CA", help="the CA's common name")
    init.add_argument("--days", type=int, default=3650, help="validity (default 10 years)")
    issue = ca_sub.add_parser(
        "issue", help="issue a key and client certificate for a service identity",
        description=f"For the cloud ({CLOUD_IDENTITY}) and claim ({CLAIM_IDENTITY}) identities, "
                    "whose keys are made where the CA runs. Gateways make their own key: "
                    "`homewatt-agent provision`. Writes NAME.key (0600) and NAME.crt in --out.")
    issue.add_argument("name", help=f"certificate CN, e.g. {CLOUD_IDENTITY} or {CLAIM_IDENTITY}")
    issue.add_argument("--out", type=Path, required=True, help="directory to write into")
    issue.add_argument("--ca-dir", type=Path)
    issue.add_argument("--days", type=int, default=365)
    issue.add_argument("--json", action="store_true", help="print the result as JSON")

    broker = sub.add_parser(
        "broker-config",
        help="write a Mosquitto config with TLS client-certificate auth and per-gateway ACLs",
        description="Writes mosquitto.conf, acl, ca.crt and (unless present) server.key and "
                    "server.crt signed by the CA into --out. Clients must present a certificate "
                    "from the CA; its CN is their username: a gateway may only use hw/<its id>/# "
                    "and $aws/things/<its id>/#, the claim identity only the provisioning "
                    "topics, the cloud identity everything. Run Mosquitto with "
                    "`mosquitto -c OUT/mosquitto.conf`.")
    broker.add_argument("--out", type=Path, required=True, help="broker directory")
    broker.add_argument("--hostname", action="append", required=True, dest="hostnames",
                        help="a name or IP gateways use to reach the broker (repeatable); "
                             "all go into the server certificate")
    broker.add_argument("--port", type=int, default=8883)
    broker.add_argument("--bind", default="0.0.0.0", help="listen address (default all)")  # noqa: S104
    broker.add_argument("--broker-user", default="mosquitto",
                        help="the user Mosquitto runs as (it must read server.key)")
    broker.add_argument("--log-dest", default="syslog",
                        help="Mosquitto log_dest: syslog, stderr or 'file /path'")
    broker.add_argument("--persistence-dir", type=Path, help="default: OUT/data")
    broker.add_argument("--cloud-identity", default=CLOUD_IDENTITY)
    broker.add_argument("--claim-identity", default=CLAIM_IDENTITY)
    broker.add_argument("--renew-server-cert", action="store_true",
                        help="issue a new server certificate even if one exists")
    broker.add_argument("--ca-dir", type=Path)


def run_broker_command(settings: CloudSettings, args: argparse.Namespace) -> int:
    ca_dir: Path = args.ca_dir or settings.effective_ca_dir
    if args.command == "ca" and args.ca_command == "init":
        if args.days < 1:
            return _bad("--days must be at least 1")
        ca = CertificateAuthority.init(ca_dir, name=args.name, days=args.days)
        _out(f"CA created: {ca.cert_path} (share it) and {ca_dir / 'ca.key'} (mode 0600, "
              "keep it secret)")
        return 0
    if args.command == "ca":
        return _issue(CertificateAuthority.load(ca_dir), args)
    if not 1 <= args.port <= 65535:
        return _bad(f"--port {args.port} is not a TCP port")
    layout = BrokerLayout(directory=args.out.resolve(), port=args.port, bind=args.bind,
                          persistence_dir=args.persistence_dir, log_dest=args.log_dest,
                          broker_user=args.broker_user)
    files = write_broker_config(CertificateAuthority.load(ca_dir), layout,
                                hostnames=args.hostnames, cloud_identity=args.cloud_identity,
                                claim_identity=args.claim_identity,
                                renew_server_cert=args.renew_server_cert)
    state = "issued" if files.server_cert_issued else "kept (use --renew-server-cert to renew)"
    _out(f"wrote {files.conf}, {files.acl} and {files.ca}; server certificate {state}")
    _out(f"start it: mosquitto -c {files.conf}")
    return 0


def _issue(ca: CertificateAuthority, args: argparse.Namespace) -> int:
    if args.days < 1:
        return _bad("--days must be at least 1")
    key, cert = ca.issue_client(args.name, days=args.days)
    safe = args.name.replace("+", "_").replace("/", "_")
    key_path, cert_path = args.out / f"{safe}.key", args.out / f"{safe}.crt"
    write_private(key_path, key_pem(key))
    write_public(cert_path, cert.pem.encode())
    if args.json:
        _out(json.dumps({"name": args.name, "certificate_id": cert.certificate_id,
                          "cert_file": str(cert_path), "key_file": str(key_path)}))
    else:
        _out(f"issued {args.name}: {cert_path} and {key_path} (mode 0600)")
    return 0


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _bad(problem: str) -> int:
    sys.stderr.write(f"homewatt-cloud: {problem}\n")
    return 2
