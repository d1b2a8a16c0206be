"""``homewatt-cloud admin ...``: bootstrap the registry without the API, for operators and scripts.

``create-home``, ``create-user``, ``create-api-key``, ``add-gateway`` and ``add-device`` write
straight to the database (HOMEWATT_DB_URL, migrated first). With ``--json`` each prints one JSON
object per result line (ids and, for a key, the key itself, shown only this once). Bad input
exits 2 naming the flag; registering what exists is not an error (``"created": false``).
Passwords never come from the command line (other users could read them from ``ps``): from
``--password-stdin`` or, on a terminal, a prompt.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cloud_sync.auth.credentials import hash_password
from cloud_sync.auth.principal import Role
from cloud_sync.bootstrap import build_store
from cloud_sync.db import migrate
from cloud_sync.db.auth_store import SqlAuthStore
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.store import now_ms
from cloud_sync.errors import BadInput, Conflict, NotFound
from cloud_sync.provisioning_cli import COMMANDS as PROVISIONING_COMMANDS
from cloud_sync.provisioning_cli import add_provisioning_admin_parsers, run_provisioning_admin
from cloud_sync.registry_rules import (
    check_device,
    check_email,
    check_gateway_id,
    check_home_id,
    check_local_id,
    check_name,
    check_password,
    check_role,
    check_timezone,
)
from cloud_sync.settings import CloudSettings
from protocols.commands import Action

Handler = Callable[[SqlRegistryStore, SqlAuthStore, argparse.Namespace], list[dict[str, Any]]]


def add_admin_parser(sub: Any) -> None:
    admin = sub.add_parser("admin", help="registry administration (homes, users, API keys, "
                           "gateways, devices) straight to the database")
    cmds = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    home = cmds.add_parser("create-home", help="create a home (prints its id)")
    home.add_argument("--name", required=True)
    home.add_argument("--timezone", default="UTC", help="IANA zone, e.g. Europe/Berlin")
    home.add_argument("--id", dest="home_id", help="choose the id (default: generated)")
    home.add_argument("--owner", metavar="EMAIL", help="an existing user who becomes owner")
    user = cmds.add_parser("create-user", help="create a user, optionally with a role in homes")
    user.add_argument("--email", required=True)
    user.add_argument("--name")
    user.add_argument("--password-stdin", action="store_true",
                      help="read the password from standard input (else prompt on a TTY; "
                           "without either the user cannot log in with a password)")
    user.add_argument("--operator", action="store_true", help="fleet-wide operator role")
    user.add_argument("--home", action="append", default=[], metavar="HOME_ID",
                      help="give the user --role in this home (repeatable)")
    user.add_argument("--role", default="owner", help="owner | member | installer")
    key = cmds.add_parser("create-api-key", help="create an API key (printed once)")
    key.add_argument("--name", required=True, help="what the key is for")
    key.add_argument("--operator", action="store_true", help="fleet-wide (every home)")
    key.add_argument("--home", action="append", default=[], metavar="HOME_ID",
                     help="a home the key may use (repeatable)")
    key.add_argument("--role", default="member", help="its role in those homes")
    key.add_argument("--expires-days", type=int, help="expire after this many days")
    _add_registry_parsers(cmds)
    add_provisioning_admin_parsers(cmds)
    for parser in cmds.choices.values():
        parser.add_argument("--json", action="store_true", help="print results as JSON")


def _add_registry_parsers(cmds: Any) -> None:
    gw = cmds.add_parser("add-gateway", help="register gateways so their telemetry is stored")
    gw.add_argument("gateway_id", nargs="*", help="one or more gateway ids (thing names)")
    gw.add_argument("--from-file", type=Path, metavar="FILE",
                    help="also register every id in FILE (one per line; # comments)")
    gw.add_argument("--home", metavar="HOME_ID", help="assign them to this home")
    gw.add_argument("--name", help="display name (one gateway only)")
    dev = cmds.add_parser("add-device", help="register a meter or an actuator of a gateway")
    dev.add_argument("gateway_id", nargs="?")
    dev.add_argument("local_id", nargs="?", help="its id in the gateway's agent.toml")
    dev.add_argument("--from-file", type=Path, metavar="FILE",
                     help="instead of GATEWAY_ID LOCAL_ID: one 'gateway_id local_id' pair per "
                          "line, all with the same kind, role and capabilities")
    dev.add_argument("--kind", choices=["meter", "actuator"],
                     help="default: actuator with --capabilities, else meter")
    dev.add_argument("--role", help="meters: grid | pv | load")
    dev.add_argument("--capabilities", default="",
                     help="actuators: comma-separated actions: "
                          + ", ".join(a.value for a in Action))
    dev.add_argument("--model", help="free-form model (sdm630, relay, heatpump)")
    dev.add_argument("--name", help="display name")
    dev.add_argument("--id", dest="device_id",
                     help="registry id (default: GATEWAY_ID.LOCAL_ID; one device only)")


def run_admin_command(settings: CloudSettings, args: argparse.Namespace) -> int:
    """Exit 0 ok, 2 bad input (one line naming the flag); database errors propagate (1)."""
    if args.admin_command in PROVISIONING_COMMANDS:
        return run_provisioning_admin(settings, args)
    handler = HANDLERS[args.admin_command]
    try:
        prepared = _prepare(args)
    except BadInput as exc:
        print(f"homewatt-cloud: {exc}", file=sys.stderr)
        return 2
    store = build_store(settings)
    try:
        migrate.upgrade(store.engine)
        registry = SqlRegistryStore(store.engine, store.breaker)
        auth = SqlAuthStore(store.engine, store.breaker)
        results = handler(registry, auth, prepared)
    except (BadInput, NotFound, Conflict) as exc:
        print(f"homewatt-cloud: {exc}", file=sys.stderr)
        return 2
    finally:
        store.engine.dispose()
    for result in results:
        text = result.pop("_text")
        print(json.dumps(result) if args.json else text)
    return 0


def _file_lines(path: Path | None) -> list[str]:
    """Non-blank, non-comment lines of an ``--from-file`` list (a fleet registers hundreds)."""
    if path is None:
        return []
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(f"--from-file: cannot read {path}: {exc.strerror}") from exc
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def _prepare(args: argparse.Namespace) -> argparse.Namespace:
    """Validate every flag before touching the database; read the password once."""
    cmd = args.admin_command
    if cmd == "create-home":
        check_name("--name", args.name)
        check_timezone(args.timezone)
        if args.home_id:
            check_home_id(args.home_id)
    elif cmd in ("create-user", "create-api-key"):
        args.role = check_role(args.role)
        if cmd == "create-user":
            args.email = check_email(args.email)
            args.password_hash = _read_password(args.password_stdin)
        elif not args.operator and not args.home:
            raise BadInput("give --operator or at least one --home HOME_ID")
    elif cmd == "add-gateway":
        args.gateway_ids = [check_gateway_id(g)
                            for g in [*args.gateway_id, *_file_lines(args.from_file)]]
        if not args.gateway_ids:
            raise BadInput("give a GATEWAY_ID or --from-file")
    else:
        _prepare_devices(args)
    return args


def _prepare_devices(args: argparse.Namespace) -> None:
    if args.gateway_id and not args.local_id:
        raise BadInput("give GATEWAY_ID and LOCAL_ID")
    pairs = [(args.gateway_id, args.local_id)] if args.local_id else []
    for line in _file_lines(args.from_file):
        parts = line.split()
        if len(parts) != 2:
            raise BadInput(f"--from-file: {line!r} is not 'gateway_id local_id'")
        pairs.append((parts[0], parts[1]))
    if not pairs:
        raise BadInput("give GATEWAY_ID LOCAL_ID or --from-file")
    args.pairs = [(check_gateway_id(g), check_local_id(d)) for g, d in pairs]
    args.caps = [c.strip() for c in args.capabilities.split(",") if c.strip()]
    args.kind = args.kind or ("actuator" if args.caps else "meter")
    try:
        check_device(args.kind, args.role, args.caps)
    except BadInput as exc:
        raise BadInput(f"--{exc}") from exc
    if args.device_id and len(args.pairs) > 1:
        raise BadInput("--id names one device: drop it with --from-file")


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        return None
    return hash_password(check_password(password))


def _create_home(registry: SqlRegistryStore, auth: SqlAuthStore,
                 args: argparse.Namespace) -> list[dict[str, Any]]:
    owner = auth.user_by_email(check_email(args.owner)) if args.owner else None
    if args.owner and owner is None:
        raise BadInput(f"--owner: no user {args.owner!r} (create-user first)")
    home = registry.create_home(check_name("--name", args.name), args.timezone, now_ms(),
                                home_id=args.home_id)
    if owner is not None:
        auth.set_membership(owner.id, home.id, Role.OWNER, now_ms())
    return [{**{"home_id": home.id, "name": home.name, "timezone": home.timezone},
             "_text": f"home {home.id} created ({home.name}, {home.timezone})"}]


def _create_user(registry: SqlRegistryStore, auth: SqlAuthStore,
                 args: argparse.Namespace) -> list[dict[str, Any]]:
    for home_id in args.home:
        if registry.home(home_id) is None:
            raise NotFound(f"--home: home {home_id!r} does not exist")
    user = auth.create_user(args.email, args.password_hash, now_ms(), name=args.name,
                            operator=args.operator)
    for home_id in args.home:
        auth.set_membership(user.id, home_id, args.role, now_ms())
    roles = {h: args.role.value for h in args.home}
    login = "can log in" if args.password_hash else "no password: cannot log in"
    return [{"user_id": user.id, "email": user.email, "operator": user.operator,
             "homes": roles, "_text": f"user {user.id} created ({user.email}; {login})"}]


def _create_api_key(_registry: SqlRegistryStore, auth: SqlAuthStore,
                    args: argparse.Namespace) -> list[dict[str, Any]]:
    expires = now_ms() + args.expires_days * 86_400_000 if args.expires_days else None
    key = auth.create_api_key(check_name("--name", args.name), now_ms(),
                              homes_roles={h: args.role for h in args.home},
                              operator=args.operator, expires_at=expires)
    return [{"key_id": key.key_id, "api_key": key.plaintext, "expires_at": expires,
             "_text": f"API key {key.key_id} created; it is shown only now:\n{key.plaintext}"}]


def _add_gateways(registry: SqlRegistryStore, _auth: SqlAuthStore,
                  args: argparse.Namespace) -> list[dict[str, Any]]:
    name = check_name("--name", args.name) if args.name else None
    out = []
    for gateway_id in args.gateway_ids:
        created = registry.add_gateway(gateway_id, now_ms(), home_id=args.home, name=name)
        where = f" in home {args.home}" if args.home else ""
        state = "registered" if created else "was already registered"
        out.append({"gateway_id": gateway_id, "home_id": args.home, "created": created,
                    "_text": f"gateway {gateway_id} {state}{where}"})
    return out


def _add_devices(registry: SqlRegistryStore, _auth: SqlAuthStore,
                 args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for gateway_id, local_id in args.pairs:
        try:
            device, created = registry.add_device(
                gateway_id, local_id, now_ms(), kind=args.kind, capabilities=args.caps,
                role=args.role, model=args.model, name=args.name, device_id=args.device_id)
        except NotFound as exc:
            raise NotFound(f"{exc} (run: homewatt-cloud admin add-gateway {gateway_id})") \
                from exc
        what = ", ".join(device.capabilities) if device.kind == "actuator" else device.role
        text = (f"device {device.id} {'registered' if created else 'updated'} on "
                f"{gateway_id} as {local_id!r}: {device.kind} ({what})")
        out.append({**{k: v for k, v in asdict(device).items() if k != "created_at"},
                    "device_id": device.id, "created": created, "_text": text})
    return out


HANDLERS: dict[str, Handler] = {
    "create-home": _create_home, "create-user": _create_user,
    "create-api-key": _create_api_key, "add-gateway": _add_gateways,
    "add-device": _add_devices,
}
