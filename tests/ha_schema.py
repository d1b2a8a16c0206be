"""Home Assistant's documented MQTT discovery schema, as far as our payloads use it.

Sources: home-assistant.io/integrations/sensor.mqtt and /switch.mqtt (configuration
variables, the ``device`` map, discovery topic format) and Home Assistant core's
``homeassistant/components/sensor/const.py`` (``DEVICE_CLASS_UNITS``,
``DEVICE_CLASS_STATE_CLASSES``) for the device classes an energy gateway needs.
:func:`check_discovery` returns every problem found (empty: Home Assistant accepts it).
"""

from __future__ import annotations

import json
import re

TOPIC = re.compile(r"^(?P<prefix>[a-zA-Z0-9_-]+)/(?P<component>sensor|switch)/"
                   r"(?:(?P<node>[a-zA-Z0-9_-]+)/)?(?P<object>[a-zA-Z0-9_-]+)/config$")

ENTITY_KEYS = {  # keys every MQTT entity platform accepts
    "availability", "availability_mode", "availability_template", "availability_topic",
    "device", "enabled_by_default", "encoding", "entity_category", "entity_picture", "icon",
    "json_attributes_template", "json_attributes_topic", "name", "object_id",
    "default_entity_id", "origin", "payload_available", "payload_not_available", "platform",
    "qos", "unique_id",
}
SENSOR_KEYS = ENTITY_KEYS | {
    "device_class", "expire_after", "force_update", "last_reset_value_template", "options",
    "state_class", "state_topic", "suggested_display_precision", "unit_of_measurement",
    "value_template",
}
SWITCH_KEYS = ENTITY_KEYS | {
    "command_template", "command_topic", "device_class", "optimistic", "payload_off",
    "payload_on", "retain", "state_off", "state_on", "state_topic", "value_template",
}
REQUIRED = {"sensor": {"state_topic"}, "switch": {"command_topic"}}
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer",
               "model", "model_id", "name", "serial_number", "suggested_area", "sw_version",
               "via_device"}
SWITCH_DEVICE_CLASSES = {"outlet", "switch"}

# DEVICE_CLASS_UNITS (None: no unit) and DEVICE_CLASS_STATE_CLASSES of HA core.
UNITS: dict[str, set[str | None]] = {
    "energy": {"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal",
               "Mcal", "Gcal"},
    "power": {"W", "kW", "MW", "GW", "TW"},
    "voltage": {"µV", "mV", "V", "kV", "MV"},
    "current": {"A", "mA"},
    "frequency": {"Hz", "kHz", "MHz", "GHz"},
    "apparent_power": {"VA"},
    "reactive_power": {"var"},
    "power_factor": {"%", None},
    "temperature": {"°C", "°F", "K"},
}
STATE_CLASSES: dict[str, set[str]] = {
    "energy": {"total", "total_increasing"},
    "power": {"measurement"}, "voltage": {"measurement"}, "current": {"measurement"},
    "frequency": {"measurement"}, "apparent_power": {"measurement"},
    "reactive_power": {"measurement"}, "power_factor": {"measurement"},
    "temperature": {"measurement"},
}
ALL_STATE_CLASSES = {"measurement", "total", "total_increasing"}
# The energy dashboard takes energy sensors with these state classes only.
ENERGY_DASHBOARD_STATE_CLASSES = {"total", "total_increasing"}


def check_discovery(topic: str, payload: bytes) -> list[str]:
    """Problems with one retained discovery message (an empty list when valid)."""
    match = TOPIC.match(topic)
    if match is None:
        return [f"{topic}: not <prefix>/<component>/[<node_id>/]<object_id>/config"]
    component = match["component"]
    try:
        config = json.loads(payload)
    except ValueError:
        return [f"{topic}: payload is not JSON"]
    if not isinstance(config, dict):
        return [f"{topic}: payload is not a JSON object"]
    problems = [f"{topic}: unknown key {key!r}" for key in config
                if key not in (SENSOR_KEYS if component == "sensor" else SWITCH_KEYS)]
    problems += [f"{topic}: missing {key}" for key in REQUIRED[component] - config.keys()]
    problems += _device(topic, config.get("device"))
    if "availability_topic" in config and "availability" in config:
        problems.append(f"{topic}: availability and availability_topic together")
    if component == "sensor":
        problems += _sensor(topic, config)
    elif config.get("device_class") not in (None, *SWITCH_DEVICE_CLASSES):
        problems.append(f"{topic}: switch device_class {config['device_class']!r}")
    return problems


def _device(topic: str, device: object) -> list[str]:
    if device is None:
        return []
    if not isinstance(device, dict):
        return [f"{topic}: device is not a map"]
    problems = [f"{topic}: unknown device key {k!r}" for k in device if k not in DEVICE_KEYS]
    identifiers = device.get("identifiers")
    if not (isinstance(identifiers, list) and identifiers
            and all(isinstance(i, str) for i in identifiers)):
        problems.append(f"{topic}: device.identifiers must be a non-empty list of strings")
    return problems


def _sensor(topic: str, config: dict[str, object]) -> list[str]:
    device_class = config.get("device_class")
    unit = config.get("unit_of_measurement")
    state_class = config.get("state_class")
    problems = []
    if state_class is not None and state_class not in ALL_STATE_CLASSES:
        problems.append(f"{topic}: state_class {state_class!r}")
    if device_class is None:
        return problems
    if not isinstance(device_class, str) or device_class not in UNITS:
        return [*problems, f"{topic}: device_class {device_class!r} not checked here"]
    if unit not in UNITS[device_class]:
        problems.append(f"{topic}: unit {unit!r} is not one of {device_class}'s")
    if state_class is not None and state_class not in STATE_CLASSES[device_class]:
        problems.append(f"{topic}: state_class {state_class!r} not allowed for {device_class}")
    if device_class == "energy" and state_class not in ENERGY_DASHBOARD_STATE_CLASSES:
        problems.append(f"{topic}: the energy dashboard needs state_class total(_increasing)")
    return problems


def template_key(config: dict[str, object]) -> str | None:
    """The state key a ``{{ value_json.<key> }}`` value template reads."""
    template = config.get("value_template")
    if not isinstance(template, str):
        return None
    match = re.fullmatch(r"\{\{\s*value_json\.([a-z0-9_]+)\s*\}\}", template)
    return match.group(1) if match else None
