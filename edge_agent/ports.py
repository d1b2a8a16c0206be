"""The narrow interfaces between the agent's logic and its I/O.

Each port has a real adapter named after its technology (``PymodbusBus``, ``SqliteBuffer``,
``PahoUplink``, ``GpiozeroPulseInput``) and a ``Fake<Port>`` beside it for unit tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge_agent.buffer_hold import HoldRelease, UnsyncedStamp
from edge_agent.status import BufferStatsView
from protocols.commands import Action, ParamValue
from protocols.modbus.registers import RegisterKind
from protocols.models import MeterHealth, Reading, SeqRange

__all__ = ["Actuator", "ActuatorResult", "CertificateGrant", "Clock", "ClockSync",
           "Connectivity", "IdentityChannel", "JobExecution", "JobsChannel", "JsonObject",
           "Message", "MeterSource", "ModbusBus", "ModbusRegisterBus", "Notifier", "OnReadings",
           "Poller", "PulseInput", "Registration", "ShadowChannel", "ShadowDelta",
           "ShadowSnapshot", "TelemetryBuffer", "Uplink"]

OnReadings = Callable[[list[Reading]], Awaitable[None]]
"""The poller's callback for every batch of readings (the agent appends them to the buffer)."""


class Clock(Protocol):
    """Wall time for timestamps, monotonic time for intervals (the Pi has no RTC)."""

    def now_ms(self) -> int:
        """UTC epoch milliseconds."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never jumps."""
        ...


class ModbusBus(Protocol):
    """One physical or logical Modbus bus; requests on it are serialised by the adapter."""

    name: str

    async def read_registers(
        self, unit: int, kind: RegisterKind, address: int, count: int
    ) -> list[int]:
        """Read ``count`` 16-bit words; raise ``BusError`` on timeout or exception response."""
        ...

    async def close(self) -> None: ...


class ModbusRegisterBus(ModbusBus, Protocol):
    """A bus that can also write holding registers (actuators need it; meters only read)."""

    async def write_register(self, unit: int, address: int, value: int) -> None:
        """Write one holding register (function code 6); ``value`` is 0..65535.

        Raises ``BusError``: with ``exception_code`` set the device refused the write (it did
        not take effect); without it there was no answer (it may or may not have)."""
        ...


ActuatorResult = dict[str, ParamValue]
"""What an actuator reports: ``{"state": "on"}``, ``{"value": 45.0}``, ``{"amps": 16.0}``."""


class Actuator(Protocol):
    """A controllable device (``GpiozeroRelay``, ``ModbusRegisterActuator``, ``FakeActuator``).

    ``actions`` lists what it accepts; the executor checks it before calling :meth:`apply`.
    """

    device_id: str
    actions: frozenset[Action]

    async def apply(self, action: Action, params: dict[str, ParamValue]) -> ActuatorResult:
        """Make the device do ``action``; returns its new state. Raises ``EdgeAgentError``
        (``BusError`` for Modbus) when the device did not (or may not have) done it."""
        ...

    async def read_back(self) -> ActuatorResult:
        """The device's current state, read from the device; raises ``EdgeAgentError``."""
        ...

    async def close(self) -> None: ...


class PulseInput(Protocol):
    """A pulse meter the scheduler polls like a Modbus meter (``GpiozeroPulseInput``,
    ``FakePulseInput``)."""

    meter_id: str

    def read(self) -> list[Reading]:
        """Current ``energy_import`` (Wh) and, once known, ``power`` (W). Cheap: in memory,
        except a checkpoint (one fsync, milliseconds on an SD card) at most once per sync
        interval. Raises ``EdgeAgentError`` once closed."""
        ...

    def close(self) -> None: ...


class MeterSource(Protocol):
    """Anything that yields readings of one meter: a Modbus reader, an S0 input adapter.

    ``read`` must not raise for an unanswered device; it returns ERROR readings and sets
    ``last_error`` (``None`` after a successful read). An ``EdgeAgentError`` it does raise
    counts as a failed poll without readings.
    """

    meter_id: str
    last_error: str | None

    async def read(self) -> list[Reading]: ...


class Poller(Protocol):
    """What the runtime needs of ``edge_agent.scheduler.MeterPoller``."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> dict[str, MeterHealth]: ...


class TelemetryBuffer(Protocol):
    """What the runtime needs of ``edge_agent.buffer.SqliteBuffer`` (synchronous, thread-safe)."""

    def open(self) -> object: ...

    def append_seqs(self, readings: Sequence[Reading], *,
                    unsynced: UnsyncedStamp | None = None) -> range: ...

    def correct_unsynced(self, boot_id: str, wall_minus_mono_ms: int) -> HoldRelease: ...

    def release_unsynced(self, boot_id: str, before_mono_ms: int | None) -> HoldRelease: ...

    def pending(self, after_seq: int = 0, limit: int = 1000) -> list[Reading]: ...

    def newest_pending(self, limit: int) -> list[Reading]: ...

    def confirm(self, ranges: Iterable[SeqRange]) -> int: ...

    def stats(self) -> BufferStatsView: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Message:
    """One MQTT message, inbound or outbound (always QoS 1)."""

    topic: str
    payload: bytes
    retain: bool = False


class Connectivity(Protocol):
    """Whether the cloud connection is up; every ``Uplink`` is one."""

    @property
    def is_connected(self) -> bool: ...

    async def wait_connected(self) -> None: ...

    async def wait_disconnected(self) -> None: ...


class Uplink(Protocol):
    """The agent's one connection to the cloud broker (``PahoUplink``, ``FakeUplink``)."""

    @property
    def is_connected(self) -> bool: ...

    async def start(self) -> None:
        """Begin connecting in the background; returns at once. Retries forever."""
        ...

    async def stop(self, farewell: Message | None = None) -> None:
        """Publish ``farewell`` if connected (waiting up to 5 s for it), then disconnect."""
        ...

    async def wait_connected(self) -> None: ...

    async def wait_disconnected(self) -> None: ...

    async def publish(self, message: Message) -> None:
        """Queue a QoS 1 publish; returns without waiting for PUBACK.

        While disconnected the client keeps the message and sends it on reconnect; callers
        bound how much they queue. Raises ``UplinkError`` if it cannot be queued.
        """
        ...

    async def receive(self) -> Message:
        """The next message on a subscribed topic."""
        ...


class ClockSync(Protocol):
    """Whether the system clock has been set by a time source (``LinuxClockSync``,
    ``FakeClockSync``). A Pi without a real-time clock boots with a wrong time."""

    def synced(self) -> bool:
        """True once NTP (or another source) has disciplined the clock; cheap, no network."""
        ...


class Notifier(Protocol):
    """The service manager's notification channel (``SocketNotifier`` for systemd's
    ``$NOTIFY_SOCKET``, ``FakeNotifier``): ``notify("READY=1", "STATUS=...")`` sends one
    message; it never raises and returns whether the message went out."""

    def notify(self, *states: str) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CertificateGrant:
    """AWS IoT's CreateCertificateFromCsr answer."""

    certificate_id: str
    certificate_pem: str
    ownership_token: str


@dataclass(frozen=True)
class Registration:
    """AWS IoT's RegisterThing answer."""

    thing_name: str
    device_configuration: Mapping[str, str]


class IdentityChannel(Protocol):
    """Fleet provisioning over a claim connection (``AwsIotIdentityChannel``,
    ``FakeIdentityChannel``). Both calls block until the answer (or their timeout) and raise
    ``ProvisioningRejected`` for a ``/rejected`` answer, ``ProvisionError`` for no answer."""

    def create_certificate_from_csr(self, csr_pem: str) -> CertificateGrant: ...

    def register_thing(self, template: str, ownership_token: str,
                       parameters: Mapping[str, str]) -> Registration: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class JobExecution:
    """One AWS IoT Jobs execution as the device sees it (``document`` is the job's JSON)."""

    job_id: str
    status: str
    version: int
    execution_number: int
    document: dict[str, object]
    status_details: dict[str, str]


class JobsChannel(Protocol):
    """What the firmware runner needs of AWS IoT Jobs (``UplinkJobsChannel`` over paho,
    ``FakeJobsChannel``; an ``IotJobsClientV2``-backed one for the awsiot transport).

    Every call raises ``JobsUnavailable`` when no answer came in time and ``JobsRejected``
    (with AWS's ``code`` and the execution's current version) when the service said no.
    """

    async def start_next(self, *, step_timeout_min: int | None = None,
                         details: Mapping[str, str] | None = None) -> JobExecution | None:
        """StartNextPendingJobExecution: the next job, now IN_PROGRESS; ``None``: none."""
        ...

    async def describe(self, job_id: str) -> JobExecution | None:
        """DescribeJobExecution (``$next`` allowed); ``None`` when there is no such one."""
        ...

    async def update(self, job_id: str, status: str, *, expected_version: int | None,
                     details: Mapping[str, str],
                     step_timeout_min: int | None = None) -> int:
        """UpdateJobExecution; returns the execution's new version number."""
        ...

    async def next_changed(self) -> JobExecution | None:
        """Wait for the next notify-next: the new next execution, or ``None`` (none left)."""
        ...


JsonObject = dict[str, object]
"""A JSON object as ``json.loads`` returns it (shadow state sections)."""


@dataclass(frozen=True)
class ShadowSnapshot:
    """A named shadow as ``get`` returns it. ``desired_ts`` maps each top-level desired key to
    its metadata timestamp (epoch s; absent when the service sent none)."""

    version: int
    desired: JsonObject
    reported: JsonObject
    delta: JsonObject
    desired_ts: dict[str, int]


@dataclass(frozen=True)
class ShadowDelta:
    """One ``/update/delta`` event of the named shadow ``name``: the desired keys that differ
    from reported at document ``version``, with their desired timestamps."""

    name: str
    version: int
    state: JsonObject
    desired_ts: dict[str, int]


class ShadowChannel(Protocol):
    """AWS IoT Device Shadow for the named shadows of one thing (``TopicShadowChannel`` over
    the uplink, ``AwsIotShadowChannel`` on awsiotsdk, ``FakeShadowChannel``).

    ``get`` and ``update`` raise ``ShadowUnavailable`` when no answer came in time and
    ``ShadowRejected`` (AWS's ``code``: 400, 404, 409, 413) when the service said no.
    """

    async def get(self, name: str) -> ShadowSnapshot | None:
        """The shadow's document; ``None`` when it does not exist (404)."""
        ...

    async def update(self, name: str, state: JsonObject, *, version: int | None) -> int:
        """Merge ``state`` (``{"desired": ..., "reported": ...}``) into the shadow, only if its
        version is still ``version`` (when given: 409 otherwise). Returns the new version."""
        ...

    async def next_delta(self) -> ShadowDelta:
        """Wait for the next delta event of any of the channel's shadows."""
        ...
