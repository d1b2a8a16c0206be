"""``homewatt-cloud admin create-claim | add-template | certificates``: what an operator or an
installer's back office needs to provision gateways by claim (see docs/provisioning.md)."""

from __future__ import annotations

import argparse
import json
import sys

from cloud_sync.db import migrate
from cloud_sync.db.engine import make_engine
from cloud_sync.db.provisioning_store import SqlProvisioningStore
from cloud_sync.db.store import make_db_breaker, now_ms
from cloud_sync.errors import BadInput, NotFound
from cloud_sync.provisioning_rules import (
    Template,
    check_template_definition,
    claim_code_digest,
    new_claim_code,
)
from cloud_sync.registry_rules import check_home_id
from cloud_sync.settings import CloudSettings

COMMANDS = ("create-claim", "add-template", "certificates")
MAX_CLAIM_TTL_H = 24 * 30


def add_provisioning_admin_parsers(admin: argparse._SubParsersAction[argparse.ArgumentParser],
                                   ) -> None:
    """Adds the subcommands (``admin`` gives each its ``--json``)."""
    claim = admin.add_parser(
        "create-claim", help="a one-time claim code that provisions one gateway into a home",
        description="Prints a claim code for HOME. The installer passes it to "
                    "`homewatt-agent provision --claim-code`; it provisions exactly one gateway, "
                    "expires after --ttl-hours, and is stored only as a SHA-256 digest (it "
                    "cannot be shown again).")
    claim.add_argument("--home", required=True, help="the home the gateway will belong to")
    claim.add_argument("--ttl-hours", type=float, default=24.0,
                       help=f"validity (default 24, at most {MAX_CLAIM_TTL_H})")
    template = admin.add_parser(
        "add-template", help="create or replace a provisioning template",
        description="A template turns RegisterThing parameters into a thing name. Example: "
                    "add-template shop-gw --thing-name 'shop-{SerialNumber}' "
                    "--param 'SerialNumber=[0-9]{8}'. {AWS::IoT::Certificate::CommonName} and "
                    "{AWS::IoT::Certificate::Id} are filled from the certificate.")
    template.add_argument("name", help="1-36 of 0-9 A-Z a-z _ -")
    template.add_argument("--thing-name", required=True, help="pattern with {Parameter}s")
    template.add_argument("--param", action="append", default=[], metavar="NAME=REGEX",
                          help="a required parameter and the regex its value must match")
    template.add_argument("--device-config", action="append", default=[], metavar="KEY=VALUE",
                          help="returned to the device as deviceConfiguration")
    template.add_argument("--disabled", action="store_true", help="refuse provisioning with it")
    certs = admin.add_parser("certificates", help="list certificates and their status")
    certs.add_argument("--gateway", help="only this gateway's (or CN's) certificates")


def run_provisioning_admin(settings: CloudSettings, args: argparse.Namespace) -> int:
    template: Template | None = None
    if args.admin_command == "add-template":
        made = _template(args)
        if isinstance(made, str):
            return _bad(made)
        template = made
    elif args.admin_command == "create-claim":
        try:
            check_home_id(args.home)
        except BadInput as exc:
            return _bad(f"--home {args.home!r}: {exc}")
        if not 0 < args.ttl_hours <= MAX_CLAIM_TTL_H:
            return _bad(f"--ttl-hours must be more than 0 and at most {MAX_CLAIM_TTL_H}")
    engine = make_engine(settings.effective_db_url)
    try:
        migrate.upgrade(engine)
        store = SqlProvisioningStore(engine, make_db_breaker(3, 1.0))
        if template is not None:
            created = store.put_template(template, now_ms())
            _out(f"template {template.name} {'created' if created else 'replaced'}: thing name "
                 f"{template.thing_name}")
        elif args.admin_command == "create-claim":
            try:
                _create_claim(store, args)
            except NotFound as exc:
                return _bad(f"--home: {exc} (create it: homewatt-cloud admin create-home)")
        else:
            _list_certificates(store, args)
    finally:
        engine.dispose()
    return 0


def _create_claim(store: SqlProvisioningStore, args: argparse.Namespace) -> None:
    code, now = new_claim_code(), now_ms()
    expires = now + int(args.ttl_hours * 3_600_000)
    claim_id = store.create_claim(args.home, claim_code_digest(code), expires_at=expires, now=now)
    if args.json:
        _out(json.dumps({"claim_id": claim_id, "claim_code": code, "home_id": args.home,
                         "expires_at": expires}))
    else:
        _out(f"claim code for home {args.home}: {code}")
        _out(f"(claim {claim_id}; one gateway, valid {args.ttl_hours:g} h; shown only now)")


def _list_certificates(store: SqlProvisioningStore, args: argparse.Namespace) -> None:
    for cert in store.certificates(args.gateway):
        if args.json:
            _out(json.dumps(cert.__dict__))
        else:
            _out(f"{cert.certificate_id[:16]}  {cert.status:<18}  {cert.common_name}  "
                 f"home={cert.home_id}")


def _template(args: argparse.Namespace) -> Template | str:
    pairs: dict[str, dict[str, str]] = {"--param": {}, "--device-config": {}}
    for flag, values in (("--param", args.param), ("--device-config", args.device_config)):
        for item in values:
            key, sep, value = item.partition("=")
            if not sep or not key:
                return f"{flag} {item!r}: use NAME=VALUE"
            pairs[flag][key] = value
    template = Template(args.name, args.thing_name, pairs["--param"], pairs["--device-config"],
                        enabled=not args.disabled)
    try:
        check_template_definition(template)
    except ValueError as exc:
        return str(exc)
    return template


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _bad(problem: str) -> int:
    sys.stderr.write(f"homewatt-cloud: {problem}\n")
    return 2
