"""The demo's registry: one home with its owner, the demo gateway and its devices.

Seeded straight into the demo cloud's database (idempotent: a second ``make demo`` finds it all
and changes nothing), from the same ``agent.toml`` the demo agent runs, so the devices the
registry lists are the meters and actuators the agent really has. The owner's log-in is printed
by the demo; it is a local demo account, never a default of a real deployment.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from cloud_sync.auth.credentials import hash_password
from cloud_sync.auth.principal import Role
from cloud_sync.db import migrate
from cloud_sync.db.auth_store import SqlAuthStore
from cloud_sync.db.engine import make_engine
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.store import make_db_breaker, now_ms

HOME_ID = "demo-home"
OWNER_EMAIL = "demo@homewatt.local"
OWNER_PASSWORD = "homewatt-demo"  # noqa: S105 - the local demo's printed log-in
# What each actuator kind of the agent accepts (edge_agent.actuators).
ACTIONS = {"relay": ["switch_on", "switch_off"], "modbus_switch": ["switch_on", "switch_off"],
           "modbus_setpoint": ["set_setpoint"], "modbus_current_limit": ["set_current_limit"]}


@dataclass(frozen=True)
class DemoLogin:
    email: str
    password: str
    api_key: str  # an operator key, for the demo's own status screen


def seed(db_url: str, agent_config: Path, key_file: Path) -> DemoLogin:
    """Create what is missing; reuse the operator key kept in ``key_file``."""
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        breaker = make_db_breaker(3, 1.0)
        registry, auth = SqlRegistryStore(engine, breaker), SqlAuthStore(engine, breaker)
        config = tomllib.loads(agent_config.read_text())
        gateway_id = str(config["gateway_id"])
        if registry.home(HOME_ID) is None:
            registry.create_home("Demo home", "Europe/Berlin", now_ms(), home_id=HOME_ID)
        owner = auth.user_by_email(OWNER_EMAIL) or auth.create_user(
            OWNER_EMAIL, hash_password(OWNER_PASSWORD), now_ms(), name="Demo owner")
        auth.set_membership(owner.id, HOME_ID, Role.OWNER, now_ms())
        registry.add_gateway(gateway_id, now_ms(), home_id=HOME_ID, name="Demo gateway")
        for meter in config.get("meters", []):
            registry.add_device(gateway_id, meter["id"], now_ms(), kind="meter",
                                capabilities=[], role=meter.get("role", "load"),
                                model=meter["model"])
        for actuator in config.get("actuators", []):
            registry.add_device(gateway_id, actuator["id"], now_ms(), kind="actuator",
                                capabilities=ACTIONS[actuator["kind"]], model=actuator["kind"])
        if not key_file.exists():
            key = auth.create_api_key("demo status screen", now_ms(), homes_roles={},
                                      operator=True)
            key_file.write_text(key.plaintext)
            key_file.chmod(0o600)
        return DemoLogin(OWNER_EMAIL, OWNER_PASSWORD, key_file.read_text().strip())
    finally:
        engine.dispose()
