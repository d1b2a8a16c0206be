"""Home Assistant MQTT discovery payloads for the gateway's meters and switches (pure).

Home Assistant reads ``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` (retained
JSON) and creates the entity; the energy dashboard then accepts sensors with
``device_class: energy`` and ``state_class: total_increasing`` in an energy unit. Device
classes, units and state classes below are the pairs Home Assistant's sensor integration
allows (``homeassistant/components/sensor/const.py``: ``DEVICE_CLASS_UNITS`` and
``DEVICE_CLASS_STATE_CLASSES``).

Topics under ``<topic_prefix>/<gateway>/``: ``availability`` (``online``/``offline``, the
connection's last will), ``<meter>/state`` (one JSON object per meter, energy in kWh),
``<actuator>/state`` and ``<actuator>/set`` (``ON``/``OFF``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from protocols.models import Unit

__all__ = ["SensorKind", "availability_topic", "command_topic", "meter_state_topic",
           "sensor_config", "sensor_kind", "switch_config", "switch_state_topic",
           "topic_for_config"]

PAYLOAD_ON, PAYLOAD_OFF = "ON", "OFF"
ONLINE, OFFLINE = "online", "offline"
_OBJECT_ID = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass(frozen=True)
class SensorKind:
    """How one of our channels appears in Home Assistant."""

    device_class: str | None
    state_class: str
    unit: str | None  # Home Assistant's unit string
    scale: float = 1.0  # ours -> theirs (Wh -> kWh: 0.001)


# By our wire unit. varh has no Home Assistant device class and is not exposed.
_KINDS: dict[Unit, SensorKind] = {
    Unit.WATT: SensorKind("power", "measurement", "W"),
    Unit.WATT_HOUR: SensorKind("energy", "total_increasing", "kWh", 0.001),
    Unit.VOLT: SensorKind("voltage", "measurement", "V"),
    Unit.AMPERE: SensorKind("current", "measurement", "A"),
    Unit.HERTZ: SensorKind("frequency", "measurement", "Hz"),
    Unit.VOLT_AMPERE: SensorKind("apparent_power", "measurement", "VA"),
    Unit.VAR: SensorKind("reactive_power", "measurement", "var"),
    Unit.CELSIUS: SensorKind("temperature", "measurement", "°C"),
}
_POWER_FACTOR = SensorKind("power_factor", "measurement", None)  # our ratio -1..1, no unit


def sensor_kind(channel: str, unit: Unit) -> SensorKind | None:
    """The Home Assistant shape of a channel, or None when it has none worth exposing."""
    if channel.startswith("power_factor"):
        return _POWER_FACTOR
    return _KINDS.get(unit)


def _object_id(*parts: str) -> str:
    return _OBJECT_ID.sub("_", "_".join(parts))


def availability_topic(prefix: str, gateway: str) -> str:
    return f"{prefix}/{gateway}/availability"


def meter_state_topic(prefix: str, gateway: str, meter: str) -> str:
    return f"{prefix}/{gateway}/{meter}/state"


def switch_state_topic(prefix: str, gateway: str, actuator: str) -> str:
    return f"{prefix}/{gateway}/{actuator}/state"


def command_topic(prefix: str, gateway: str, actuator: str) -> str:
    return f"{prefix}/{gateway}/{actuator}/set"


def topic_for_config(discovery_prefix: str, component: str, gateway: str,
                     object_id: str) -> str:
    return f"{discovery_prefix}/{component}/{_object_id(gateway)}/{object_id}/config"


def _gateway_device(gateway: str, version: str) -> dict[str, object]:
    return {"identifiers": [f"homewatt_{gateway}"], "name": f"homewatt gateway {gateway}",
            "manufacturer": "homewatt", "model": "edge agent", "sw_version": version}


def _availability(prefix: str, gateway: str) -> dict[str, object]:
    return {"availability_topic": availability_topic(prefix, gateway),
            "payload_available": ONLINE, "payload_not_available": OFFLINE}


def sensor_config(*, discovery_prefix: str, prefix: str, gateway: str, meter: str, model: str,
                  channel: str, kind: SensorKind) -> tuple[str, bytes]:
    """``(config topic, retained payload)`` of one meter channel's sensor."""
    object_id = _object_id("homewatt", gateway, meter, channel)
    payload: dict[str, object] = {
        "name": channel.replace("_", " "),
        "unique_id": object_id,
        "state_topic": meter_state_topic(prefix, gateway, meter),
        "value_template": f"{{{{ value_json.{channel} }}}}",
        "state_class": kind.state_class,
        "device": {"identifiers": [_object_id("homewatt", gateway, meter)],
                   "name": f"{meter} ({model})", "manufacturer": _maker(model), "model": model,
                   "via_device": f"homewatt_{gateway}"},
        **_availability(prefix, gateway),
    }
    if kind.device_class is not None:
        payload["device_class"] = kind.device_class
    if kind.unit is not None:
        payload["unit_of_measurement"] = kind.unit
    return (topic_for_config(discovery_prefix, "sensor", gateway, object_id),
            json.dumps(payload).encode())


def switch_config(*, discovery_prefix: str, prefix: str, gateway: str, actuator: str,
                  version: str) -> tuple[str, bytes]:
    """``(config topic, retained payload)`` of an actuator's switch (non-optimistic: Home
    Assistant shows the state the gateway reports after the executor ran the command)."""
    object_id = _object_id("homewatt", gateway, actuator)
    payload: dict[str, object] = {
        "name": actuator.replace("-", " ").replace("_", " "),
        "unique_id": object_id,
        "command_topic": command_topic(prefix, gateway, actuator),
        "state_topic": switch_state_topic(prefix, gateway, actuator),
        "payload_on": PAYLOAD_ON, "payload_off": PAYLOAD_OFF,
        "state_on": PAYLOAD_ON, "state_off": PAYLOAD_OFF,
        "optimistic": False,
        "qos": 1,
        "device_class": "switch",
        "device": _gateway_device(gateway, version),
        **_availability(prefix, gateway),
    }
    return (topic_for_config(discovery_prefix, "switch", gateway, object_id),
            json.dumps(payload).encode())


def _maker(model: str) -> str:
    return "Eastron" if model.startswith("sdm") else "SunSpec" if model == "sunspec" else model
