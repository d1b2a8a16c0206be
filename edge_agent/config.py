"""The agent's settings: one TOML file, overridable by ``HOMEWATT_`` environment variables.

``load_config`` turns every validation problem into one :class:`ConfigError` that names the key
and says how to fix it; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge_agent.errors import ConfigError

ID = r"^[A-Za-z0-9:_.-]{1,64}$"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttSettings(Section):
    url: str = "mqtt://127.0.0.1:1883"  # mqtt:// plain, mqtts:// TLS
    # paho (MQTT 3.1.1, any broker) or awsiot (awsiotsdk's MQTT 5 mTLS client, as AWS IoT Core
    # expects it; needs mqtts:// with cert_file and key_file)
    transport: Literal["paho", "awsiot"] = "paho"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=1200)] = 30
    # AWS IoT Core per-connection limits: 100 publishes/s and 512 KB/s.
    publish_rate_per_s: Annotated[float, Field(gt=0)] = 100.0
    publish_bytes_per_s: Annotated[int, Field(gt=0)] = 512 * 1024
    batch_max_bytes: Annotated[int, Field(ge=1024, le=128 * 1024)] = 128 * 1024
    max_inflight_batches: Annotated[int, Field(ge=1, le=100)] = 8
    ack_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    reconnect_min_s: Annotated[float, Field(gt=0)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0)] = 120.0

    @model_validator(mode="after")
    def _tls_pair(self) -> MqttSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        if not self.url.startswith(("mqtt://", "mqtts://")):
            raise ValueError("url must start with mqtt:// or mqtts://")
        if self.transport == "awsiot" and (not self.url.startswith("mqtts://")
                                           or self.cert_file is None):
            raise ValueError("transport awsiot connects with mutual TLS: use an mqtts:// url "
                             "and set cert_file and key_file")
        return self


class BufferSettings(Section):
    path: Path | None = None  # default: <data_dir>/buffer.sqlite
    max_bytes: Annotated[int, Field(ge=1_000_000)] = 256 * 1024 * 1024
    # When full: thin the oldest data to one reading per this many minutes per channel,
    # then drop the oldest. Both are counted and reported in the gateway status.
    thin_to_minutes: Annotated[int, Field(ge=1, le=1440)] = 15


class BusSettings(Section):
    name: Annotated[str, Field(pattern=ID)]
    kind: Literal["tcp", "rtu", "rtu_over_tcp"]
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    serial_port: str | None = None
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    # Silence between frames; RS485 devices need >= 3.5 characters, many want more.
    frame_gap_ms: Annotated[float, Field(ge=0, le=1000)] = 0.0

    @model_validator(mode="after")
    def _endpoint(self) -> BusSettings:
        if self.kind == "rtu" and not self.serial_port:
            raise ValueError(f"bus {self.name!r} is rtu: set serial_port (e.g. /dev/ttyUSB0)")
        if self.kind != "rtu" and not self.host:
            raise ValueError(f"bus {self.name!r} is {self.kind}: set host")
        return self


class S0Settings(Section):
    pin: Annotated[int, Field(ge=0, le=40)]
    impulses_per_kwh: Annotated[float, Field(gt=0)] = 1000.0
    debounce_ms: Annotated[float, Field(ge=0, le=1000)] = 30.0


class MeterSettings(Section):
    id: Annotated[str, Field(pattern=ID)]
    model: Literal["sdm120", "sdm630", "sdm72", "sunspec", "s0"]
    role: Literal["grid", "pv", "load"] = "load"
    bus: str | None = None
    unit: Annotated[int, Field(ge=1, le=247)] = 1
    interval_s: Annotated[float, Field(ge=0.1, le=3600)] = 5.0
    # Counters rising faster than this power allows are flagged suspect.
    max_power_w: Annotated[float, Field(gt=0)] = 50_000.0
    s0: S0Settings | None = None

    @model_validator(mode="after")
    def _wiring(self) -> MeterSettings:
        if self.model == "s0" and self.s0 is None:
            raise ValueError(f"meter {self.id!r} is s0: add a [meters.s0] table with its pin")
        if self.model != "s0" and not self.bus:
            raise ValueError(f"meter {self.id!r} reads over Modbus: set bus to a [[buses]] name")
        return self


class InterlockSettings(Section):
    """Safety rules an actuator enforces on every command, whatever its source."""

    min_on_s: Annotated[float, Field(ge=0)] = 0.0  # anti short-cycle: stay on at least this long
    min_off_s: Annotated[float, Field(ge=0)] = 0.0
    max_switches_per_hour: Annotated[int, Field(ge=1)] | None = None
    setpoint_min: float | None = None
    setpoint_max: float | None = None

    @model_validator(mode="after")
    def _range(self) -> InterlockSettings:
        lo, hi = self.setpoint_min, self.setpoint_max
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("setpoint_min must not exceed setpoint_max")
        return self


class ActuatorSettings(Section):
    """A controllable device: a GPIO relay or a Modbus holding register."""

    id: Annotated[str, Field(pattern=ID)]  # the device_id commands address
    kind: Literal["relay", "modbus_switch", "modbus_setpoint", "modbus_current_limit"]
    pin: Annotated[int, Field(ge=0, le=40)] | None = None  # relay: BCM pin
    active_high: bool = True
    bus: str | None = None  # modbus_*: a [[buses]] name
    unit: Annotated[int, Field(ge=1, le=247)] = 1
    address: Annotated[int, Field(ge=0, le=65535)] | None = None  # holding register
    scale: Annotated[float, Field(gt=0)] = 1.0  # register = round(value * scale)
    interlocks: InterlockSettings = InterlockSettings()

    @model_validator(mode="after")
    def _wiring(self) -> ActuatorSettings:
        if self.kind == "relay" and self.pin is None:
            raise ValueError(f"actuator {self.id!r} is a relay: set pin (BCM number)")
        if self.kind != "relay" and (self.bus is None or self.address is None):
            raise ValueError(f"actuator {self.id!r} is {self.kind}: set bus and address")
        return self


class CommandSettings(Section):
    dedup_path: Path | None = None  # default: <data_dir>/commands.sqlite
    # Executed command ids are remembered for this many ids or days, whichever is larger, so
    # a redelivery inside the window is re-acked, never re-executed.
    dedup_max_ids: Annotated[int, Field(ge=100)] = 10_000
    dedup_days: Annotated[float, Field(gt=0)] = 7.0


class ShadowSettings(Section):
    """Each actuator's named shadow ``$aws/things/{gateway}/shadow/name/{actuator}``
    (``edge_agent.shadow_sync``): desired state is applied through the command executor, the
    actual state reported. Actuators whose id has a '.' (not a valid shadow name) get none."""

    enabled: bool = True
    path: Path | None = None  # default: <data_dir>/shadow.sqlite
    # A desired change becomes a command that expires this long after it is taken on.
    command_ttl_s: Annotated[float, Field(ge=10, le=86400)] = 300.0
    request_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    # After a shadow request found no answer, try again this often while connected.
    retry_s: Annotated[float, Field(gt=0, le=3600)] = 30.0


class FirmwareSettings(Section):
    """Updates over AWS IoT Jobs (docs/firmware.md). ``slots``: ``directory`` swaps the agent's
    own software under ``app_root`` (current -> slots/a|b); ``rauc`` installs full images."""

    enabled: bool = False
    slots: Literal["directory", "rauc"] = "directory"
    app_root: Path = Path("/opt/homewatt")
    product: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")] = "homewatt-agent"
    hardware: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")] = "rpi4"
    trust_root: Path = Path("/etc/homewatt/firmware-root.json")
    state_dir: Path | None = None  # default: <data_dir>/firmware
    trial_boots: Annotated[int, Field(ge=1, le=10)] = 3
    health_deadline_s: Annotated[float, Field(gt=0)] = 300.0
    health_interval_s: Annotated[float, Field(gt=0)] = 5.0
    step_timeout_min: Annotated[int, Field(ge=1, le=10080)] = 60
    rauc_slot_class: str = "rootfs"


class ClockSettings(Section):
    """When wall time is trusted (a Raspberry Pi has no real-time clock; see
    ``edge_agent.clock_watch``). ``kernel``: readings are held until the kernel (adjtimex) or
    systemd-timesyncd reports sync, then re-stamped from monotonic time; ``none``: trusted
    from the start (hosts with an RTC, containers, development)."""

    sync: Literal["none", "kernel"] = "none"
    hold_max_s: Annotated[float, Field(ge=1, le=7 * 86400)] = 3600.0  # then sent flagged
    check_interval_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    timesync_flag: Path = Path("/run/systemd/timesync/synchronized")


class HomeAssistantSettings(Section):
    """Home Assistant MQTT discovery on a local broker (``edge_agent.ha_bridge``)."""

    enabled: bool = False
    url: str = "mqtt://127.0.0.1:1883"  # the broker Home Assistant uses
    ca_file: Path | None = None  # for an mqtts:// url
    discovery_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "homeassistant"
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "homewatt"
    publish_interval_s: Annotated[float, Field(ge=0.1, le=3600)] = 10.0

    @model_validator(mode="after")
    def _url(self) -> HomeAssistantSettings:
        if not self.url.startswith(("mqtt://", "mqtts://")):
            raise ValueError("url must start with mqtt:// or mqtts://")
        return self


class ModbusProxySettings(Section):
    """A Modbus TCP server sharing one bus with local systems (``edge_agent.modbus_proxy``)."""

    bus: Annotated[str, Field(pattern=ID)]  # a [[buses]] name
    host: str = "127.0.0.1"  # 0.0.0.0 to serve the LAN
    port: Annotated[int, Field(ge=1, le=65535)] = 5020
    max_clients: Annotated[int, Field(ge=1, le=32)] = 4
    allow_writes: bool = False  # actuators' registers are refused even when true
    units: list[Annotated[int, Field(ge=1, le=247)]] | None = None  # None: every unit id


class AgentConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOMEWATT_", env_nested_delimiter="__",
                                      extra="forbid")

    gateway_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9:_-]{1,128}$")]
    data_dir: Path = Path("/var/lib/homewatt")
    status_interval_s: Annotated[float, Field(gt=0)] = 30.0
    # Local /livez, /readyz and /metrics (0 = off; gateways set e.g. 9100). /livez fails once
    # /readyz has failed continuously for longer than liveness_window_s.
    health_port: Annotated[int, Field(ge=0, le=65535)] = 0
    health_host: str = "127.0.0.1"
    liveness_window_s: Annotated[float, Field(gt=0)] = 120.0
    mqtt: MqttSettings = MqttSettings()
    buffer: BufferSettings = BufferSettings()
    buses: list[BusSettings] = Field(default_factory=list)
    meters: list[MeterSettings] = Field(default_factory=list)
    actuators: list[ActuatorSettings] = Field(default_factory=list)
    commands: CommandSettings = CommandSettings()
    shadow: ShadowSettings = ShadowSettings()
    firmware: FirmwareSettings = FirmwareSettings()
    clock: ClockSettings = ClockSettings()
    home_assistant: HomeAssistantSettings = HomeAssistantSettings()
    modbus_proxy: list[ModbusProxySettings] = Field(default_factory=list)
    # Observability: spans to no exporter (no-op), stderr, or OTLP/HTTP at tracing_otlp_endpoint;
    # `run` logs JSON lines unless log_format is "text".
    tracing_exporter: Literal["none", "console", "otlp"] = "none"
    tracing_otlp_endpoint: str | None = None
    log_format: Literal["json", "text"] = "json"

    @model_validator(mode="after")
    def _references(self) -> AgentConfig:
        names = [b.name for b in self.buses]
        for what, ids in (("bus names", names), ("meter ids", [m.id for m in self.meters]),
                          ("actuator ids", [a.id for a in self.actuators])):
            if len(set(ids)) != len(ids):
                raise ValueError(f"{what} must be unique")
        users = [("meter", m.id, m.bus) for m in self.meters]
        users += [("actuator", a.id, a.bus) for a in self.actuators]
        users += [("modbus_proxy", f"port {p.port}", p.bus) for p in self.modbus_proxy]
        for kind, user_id, bus in users:
            if bus is not None and bus not in names:
                raise ValueError(f"{kind} {user_id!r} names bus {bus!r}, which no [[buses]] "
                                 f"entry defines (known: {', '.join(names) or 'none'})")
        return self

    @property
    def buffer_path(self) -> Path:
        return self.buffer.path or self.data_dir / "buffer.sqlite"

    @property
    def dedup_path(self) -> Path:
        return self.commands.dedup_path or self.data_dir / "commands.sqlite"

    @property
    def shadow_path(self) -> Path:
        return self.shadow.path or self.data_dir / "shadow.sqlite"

    @property
    def firmware_state_dir(self) -> Path:
        return self.firmware.state_dir or self.data_dir / "firmware"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file, so a systemd drop-in can override one key.
        return env_settings, init_settings


def load_config(path: Path) -> AgentConfig:
    """Read and validate a TOML config; raise :class:`ConfigError` naming the bad key."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError("", f"config file {path} does not exist") from exc
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path} is not valid TOML: {exc}") from exc
    try:
        return AgentConfig(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key (check its spelling against the configuration reference)"
        elif first["type"] == "missing":
            message = "required key is missing"
        raise ConfigError(key, message) from exc
