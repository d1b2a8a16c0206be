"""The S0 GPIO adapter driven through gpiozero's mock pin factory, with a fake clock."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin

from edge_agent.clock import FakeClock
from edge_agent.config import MeterSettings, S0Settings
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.ports import PulseInput
from edge_agent.s0_input import FakePulseInput, GpioUnavailableError, GpiozeroPulseInput
from protocols.models import Quality, Reading, Unit

PIN = 17


def meter(impulses_per_kwh: float = 1000.0, debounce_ms: float = 30.0) -> MeterSettings:
    return MeterSettings(
        id="s0-heatpump",
        model="s0",
        s0=S0Settings(pin=PIN, impulses_per_kwh=impulses_per_kwh, debounce_ms=debounce_ms),
    )


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    mock = MockFactory()
    yield mock
    mock.reset()
    mock.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def s0(factory: MockFactory, clock: FakeClock, tmp_path: Path) -> Iterator[GpiozeroPulseInput]:
    pulse_input = GpiozeroPulseInput(meter(), clock=clock, state_dir=tmp_path, pin_factory=factory)
    yield pulse_input
    pulse_input.close()


def pin_of(factory: MockFactory) -> MockPin:
    pin = factory.pin(PIN)
    assert isinstance(pin, MockPin)
    return pin


def pulse(pin: MockPin, clock: FakeClock, width_s: float = 0.05, pause_s: float = 1.0) -> None:
    """One clean S0 pulse: the open collector pulls the pulled-up pin low, then lets go."""
    pin.drive_low()
    clock.advance(width_s)
    pin.drive_high()
    clock.advance(pause_s)


def by_channel(readings: list[Reading]) -> dict[str, Reading]:
    return {r.channel: r for r in readings}


def test_each_pulse_adds_one_pulse_of_energy(
    s0: GpiozeroPulseInput, factory: MockFactory, clock: FakeClock
) -> None:
    pin = pin_of(factory)
    for _ in range(5):
        pulse(pin, clock)
    energy = by_channel(s0.read())["energy_import"]
    assert (energy.value, energy.unit, energy.quality) == (5.0, Unit.WATT_HOUR, Quality.GOOD)
    assert energy.meter_id == "s0-heatpump"
    assert energy.ts == clock.now_ms()


def test_bounces_closer_than_30ms_are_rejected(
    s0: GpiozeroPulseInput, factory: MockFactory, clock: FakeClock
) -> None:
    pin = pin_of(factory)
    for _ in range(3):
        # Closing bounce: low, 2 ms high, low again; then an opening bounce after the release.
        pin.drive_low()
        clock.advance(0.002)
        pin.drive_high()
        clock.advance(0.002)
        pin.drive_low()
        clock.advance(0.040)
        pin.drive_high()
        clock.advance(0.003)
        pin.drive_low()
        clock.advance(0.002)
        pin.drive_high()
        clock.advance(1.0)
    assert (s0.pulses, s0.bounces) == (3, 6)
    assert by_channel(s0.read())["energy_import"].value == 3.0


def test_pulses_exactly_debounce_apart_all_count(
    factory: MockFactory, clock: FakeClock, tmp_path: Path
) -> None:
    fast = GpiozeroPulseInput(
        meter(debounce_ms=30), clock=clock, state_dir=tmp_path, pin_factory=factory
    )
    try:
        pin = pin_of(factory)
        for _ in range(10):
            pulse(pin, clock, width_s=0.030, pause_s=0.030)
        assert (fast.pulses, fast.bounces) == (10, 0)
    finally:
        fast.close()


def test_power_appears_after_two_pulses_and_decays_when_they_stop(
    s0: GpiozeroPulseInput, factory: MockFactory, clock: FakeClock
) -> None:
    pin = pin_of(factory)
    pulse(pin, clock, width_s=0.05, pause_s=3.55)
    assert set(by_channel(s0.read())) == {"energy_import"}  # one pulse: no interval yet
    pulse(pin, clock, width_s=0.05, pause_s=0.0)  # 3.6 s after the first: 1 kW
    power = by_channel(s0.read())["power"]
    assert (power.unit, power.quality) == (Unit.WATT, Quality.GOOD)
    assert power.value == pytest.approx(1000.0, rel=1e-6)
    clock.advance(36.0 - 0.05)  # 36 s since the last pulse
    assert by_channel(s0.read())["power"].value == pytest.approx(100.0, rel=1e-6)


def test_count_survives_close_and_reopen(
    factory: MockFactory, clock: FakeClock, tmp_path: Path
) -> None:
    first = GpiozeroPulseInput(meter(), clock=clock, state_dir=tmp_path, pin_factory=factory)
    for _ in range(7):
        pulse(pin_of(factory), clock)
    first.close()

    restarted_factory, restarted_clock = MockFactory(), FakeClock()
    second = GpiozeroPulseInput(
        meter(), clock=restarted_clock, state_dir=tmp_path, pin_factory=restarted_factory
    )
    try:
        assert by_channel(second.read())["energy_import"].value == 7.0
        pulse(pin_of(restarted_factory), restarted_clock)
        assert by_channel(second.read())["energy_import"].value == 8.0
    finally:
        second.close()
        restarted_factory.reset()
        restarted_factory.close()


def test_count_survives_a_crash_without_close(
    factory: MockFactory, clock: FakeClock, tmp_path: Path
) -> None:
    crashed = GpiozeroPulseInput(meter(), clock=clock, state_dir=tmp_path, pin_factory=factory)
    for _ in range(4):
        pulse(pin_of(factory), clock)
    other_factory = MockFactory()
    try:
        # The crashed process never closed: a new one must still see every counted pulse.
        reopened = GpiozeroPulseInput(
            meter(), clock=FakeClock(), state_dir=tmp_path, pin_factory=other_factory
        )
        assert reopened.pulses == 4
        reopened.close()
    finally:
        crashed.close()
        other_factory.reset()
        other_factory.close()


def test_corrected_impulses_per_kwh_keeps_energy_continuous(
    factory: MockFactory, clock: FakeClock, tmp_path: Path
) -> None:
    wrong = GpiozeroPulseInput(
        meter(impulses_per_kwh=1000), clock=clock, state_dir=tmp_path, pin_factory=factory
    )
    for _ in range(10):
        pulse(pin_of(factory), clock)
    wrong.close()
    fixed = GpiozeroPulseInput(
        meter(impulses_per_kwh=800), clock=clock, state_dir=tmp_path, pin_factory=factory
    )
    try:
        assert by_channel(fixed.read())["energy_import"].value == 10.0
        pulse(pin_of(factory), clock)
        assert by_channel(fixed.read())["energy_import"].value == 11.25
    finally:
        fixed.close()


def test_counting_goes_on_while_the_state_file_cannot_be_written(
    s0: GpiozeroPulseInput,
    factory: MockFactory,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = s0._store
    real_save = store.save

    def failing_save(counter: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "save", failing_save)
    for _ in range(3):
        pulse(pin_of(factory), clock)
    assert by_channel(s0.read())["energy_import"].value == 3.0

    monkeypatch.setattr(store, "save", real_save)
    s0.read()  # the next poll retries the save
    saved = sqlite3.connect(tmp_path / "s0-s0-heatpump.sqlite")
    try:
        assert saved.execute("SELECT pulses FROM s0_counter").fetchone() == (3,)
    finally:
        saved.close()


def test_read_after_close_fails_and_close_is_idempotent(
    factory: MockFactory, clock: FakeClock, tmp_path: Path
) -> None:
    pulse_input = GpiozeroPulseInput(meter(), clock=clock, state_dir=tmp_path, pin_factory=factory)
    pulse_input.close()
    pulse_input.close()
    with pytest.raises(EdgeAgentError, match="closed"):
        pulse_input.read()


def test_pin_already_in_use_is_a_clear_error(
    s0: GpiozeroPulseInput, factory: MockFactory, clock: FakeClock, tmp_path: Path
) -> None:
    with pytest.raises(EdgeAgentError, match="GPIO17"):
        GpiozeroPulseInput(meter(), clock=clock, state_dir=tmp_path / "other", pin_factory=factory)


def test_meter_without_s0_table_is_a_config_error(clock: FakeClock, tmp_path: Path) -> None:
    modbus_meter = MeterSettings(id="grid", model="sdm630", bus="rs485")
    with pytest.raises(ConfigError, match="s0"):
        GpiozeroPulseInput(modbus_meter, clock=clock, state_dir=tmp_path)


def test_no_gpio_without_an_explicit_mock_is_a_clear_error(
    clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-gpio-library")
    with pytest.raises(GpioUnavailableError, match="GPIO is unavailable"):
        GpiozeroPulseInput(meter(), clock=clock, state_dir=tmp_path)
    assert Device.pin_factory is None


def test_fake_pulse_input_applies_scripted_pulses_as_time_passes(clock: FakeClock) -> None:
    start = clock.monotonic()
    fake: PulseInput = FakePulseInput("s0-fake", clock, pulses=[start + 1, start + 4.6])
    assert by_channel(fake.read())["energy_import"].value == 0.0
    clock.advance(5)
    readings = by_channel(fake.read())
    assert readings["energy_import"].value == 2.0
    assert readings["power"].value == pytest.approx(1000.0, rel=1e-6)
    fake.close()
    with pytest.raises(EdgeAgentError):
        fake.read()


def test_fake_pulse_input_handler_replaces_readings(clock: FakeClock) -> None:
    def broken() -> list[Reading]:
        raise EdgeAgentError("simulated GPIO fault")

    fake = FakePulseInput("s0-fake", clock, handler=broken)
    assert fake.pulse()
    with pytest.raises(EdgeAgentError, match="simulated"):
        fake.read()


def test_checkpoint_runs_once_per_sync_interval_when_there_is_news(
    factory: MockFactory, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulse_input: PulseInput = GpiozeroPulseInput(
        meter(), clock=clock, state_dir=tmp_path, pin_factory=factory, sync_interval_s=60
    )
    assert isinstance(pulse_input, GpiozeroPulseInput)
    syncs: list[bool] = []
    real_sync = pulse_input._store.sync

    def counting_sync(*, truncate: bool = False) -> None:
        syncs.append(truncate)
        real_sync(truncate=truncate)

    monkeypatch.setattr(pulse_input._store, "sync", counting_sync)
    for _ in range(10):
        pulse(pin_of(factory), clock)  # 10.5 s of pulses: committed, not yet fsynced
    pulse_input.read()
    assert syncs == []
    clock.advance(60)
    pulse_input.read()
    pulse_input.read()  # nothing new since: no second fsync
    assert syncs == [False]
    pulse_input.close()
    assert syncs == [False, True]


@pytest.mark.skipif(Path("/proc/device-tree/model").exists(), reason="runs off a Pi only")
def test_off_a_pi_the_default_factory_is_refused_not_mocked(
    clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    with pytest.raises(GpioUnavailableError, match="Raspberry Pi"):
        GpiozeroPulseInput(meter(), clock=clock, state_dir=tmp_path)
