"""``homewatt-agent provision``: the installer's one command to give a new gateway its identity
(see :mod:`edge_agent.provision`). Exit codes: 0 provisioned, 1 failed (refused by the cloud,
unreachable), 2 bad input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.provision import (
    DEFAULT_TEMPLATE,
    ProvisionError,
    ProvisionInputError,
    ProvisionRequest,
    ProvisionResult,
    provision,
)

EXIT_OK, EXIT_FAILED, EXIT_INPUT = 0, 1, 2


def add_provision_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "provision", help="get this gateway its certificate and config (fleet provisioning)",
        description="Generates this gateway's private key (it never leaves the gateway), asks "
                    "the cloud for a certificate with the claim certificate and the home's "
                    "one-time claim code (AWS IoT fleet provisioning: CreateCertificateFromCsr, "
                    "RegisterThing), writes gateway.key (0600), gateway.crt, ca.crt and the "
                    "agent config, then connects once with the new identity. Exit status 0 "
                    "when provisioned, 1 when the cloud refused or could not be reached, 2 on "
                    "bad input.")
    parser.add_argument("--broker", required=True, metavar="URL",
                        help="the broker, mqtts://host:8883")
    parser.add_argument("--ca-file", type=Path, help="CA that signed the broker's certificate "
                        "(default: the system's trust store)")
    parser.add_argument("--claim-cert", type=Path, required=True,
                        help="the claim certificate (PEM)")
    parser.add_argument("--claim-key", type=Path, required=True, help="its private key (PEM)")
    parser.add_argument("--claim-code", required=True,
                        help="the home's one-time claim code ('-' reads it from stdin)")
    parser.add_argument("--serial", required=True,
                        help="this gateway's serial number (the template's SerialNumber)")
    parser.add_argument("--thing-name", help="default gw-SERIAL, as the default template "
                        "names it; must equal what the template makes of the parameters")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE,
                        help=f"provisioning template (default {DEFAULT_TEMPLATE})")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a further template parameter (repeatable)")
    parser.add_argument("--out-dir", type=Path, default=Path("/etc/homewatt"),
                        help="where key, certificates and config go (default /etc/homewatt)")
    parser.add_argument("--config", type=Path, help="agent config to write (default "
                        "OUT_DIR/agent.toml; an existing one keeps its meters and buses)")
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/homewatt"),
                        help="data_dir of a new config (default /var/lib/homewatt)")
    parser.add_argument("--transport", choices=["paho", "awsiot"], default="paho",
                        help="mqtt.transport of the written config (awsiot for AWS IoT Core)")
    parser.add_argument("--force", action="store_true",
                        help="provision again although this gateway has a certificate")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the final connection with the new certificate")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per step")
    parser.add_argument("--user", help="the service user who must read the key and config "
                                       "(default: homewatt when run as root and it exists)")


def provision_command(args: argparse.Namespace) -> int:
    request = _request(args)
    if isinstance(request, str):
        _err(f"provision: {request}")
        return EXIT_INPUT
    from edge_agent.provision_channel import AwsIotIdentityChannel, connect_check

    def verify(result: ProvisionResult) -> None:
        connect_check(request, result.cert_file, result.key_file, f"verify-{result.thing_name}")

    try:
        result = provision(request, AwsIotIdentityChannel.open, progress=_progress,
                           verify=None if args.no_verify else verify)
    except ProvisionInputError as exc:
        _err(f"provision: {exc}")
        return EXIT_INPUT
    except ProvisionError as exc:
        _err(f"provision failed: {exc}")
        return EXIT_FAILED
    _share(result, args.user)
    _out(f"gateway {result.thing_name} is provisioned; start it with: homewatt-agent run "
         f"--config {result.config_file}")
    return EXIT_OK


def _share(result: ProvisionResult, user_name: str | None) -> None:
    """As root the key is written 0600 root:root; give the service user's group read access
    (never others), or the packaged agent could not start."""
    from edge_agent.doctor_cli import service_user
    from edge_agent.file_access import share_with_service_user

    try:
        user = service_user(user_name)
    except KeyError:
        _err(f"provision: --user {user_name}: no such user; the files stay readable by root "
             "only (fix with: chgrp <group> FILE && chmod g+r FILE)")
        return
    share_with_service_user(result.config_file, user, _progress)


def _request(args: argparse.Namespace) -> ProvisionRequest | str:
    code = sys.stdin.readline().strip() if args.claim_code == "-" else args.claim_code
    params: dict[str, str] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            return f"--param {item!r}: use NAME=VALUE"
        params[key] = value
    if args.timeout <= 0:
        return "--timeout must be more than 0"
    return ProvisionRequest(
        broker_url=args.broker, claim_cert=args.claim_cert, claim_key=args.claim_key,
        claim_code=code, serial=args.serial, ca_file=args.ca_file, thing_name=args.thing_name,
        template=args.template, parameters=params, out_dir=args.out_dir,
        config_path=args.config, data_dir=args.data_dir, transport=args.transport,
        force=args.force, timeout_s=args.timeout)


def _progress(line: str) -> None:
    _out(f"- {line}")


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
