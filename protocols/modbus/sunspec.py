"""SunSpec: the model chain, the common model (1), inverters (101-103, 111-113) and meters
(201-204, 211-214) as table-driven register maps. Pure: words in, values out.

A SunSpec device answers holding registers (FC3) at one of :data:`SCAN_BASES` with the marker
``'SunS'`` (0x5375 0x6E53); models follow as ``ID, L, <L words of body>``; the next model
header sits at ``address + L + 2``; ``ID == 0xFFFF`` ends the chain.

Point offsets, types and scale factors come from the SunSpec model definitions
(github.com/sunspec/models ``json/model_<id>.json``). Offsets below are relative to the model
body, i.e. the register after ``L`` (json offset - 2).

Sign conventions (what the spec says, and how it maps to ours):

* Inverters: ``W`` is "AC Power" delivered by the inverter, positive while producing; ``WH``
  is "AC Energy" produced (acc32). Ours is + production: ``sign = 1``.
* Meters: ``W`` is "Total Real Power"; ``TotWhImp`` "Total Real Energy Imported" and
  ``TotWhExp`` "Total Real Energy Exported". The meter models follow the utility-meter
  convention: power delivered from the grid to the site is positive and counts in
  ``TotWhImp``. That is our grid convention (+ import / - export): ``sign = 1``, and
  ``TotWhImp``/``TotWhExp`` map to ``energy_import``/``energy_export``. Some vendors mount
  their meter the other way (SolarEdge's export+import meter reports import as negative): such
  a device needs a map with ``sign = -1`` on power and the energies swapped, a data change.
* Power factor is in percent (``Pct``) in SunSpec and a ratio (-1..1) on our wire: scale 0.01.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from protocols.errors import InvalidMessage
from protocols.modbus.decode import encode_map
from protocols.modbus.registers import ChannelKind, DataType, Field, RegisterKind, RegisterMap
from protocols.models import Unit

SCAN_BASES: tuple[int, ...] = (40000, 0, 50000)
SUNS_MARKER: tuple[int, int] = (0x5375, 0x6E53)  # 'SunS'
END_MODEL_ID = 0xFFFF
COMMON_MODEL_ID = 1
MAX_BLOCK_WORDS = 125  # Modbus FC3 limit per request


def is_sunspec_marker(words: Sequence[int]) -> bool:
    """True when the two words at a scan base read ``'SunS'``."""
    return tuple(words) == SUNS_MARKER


@dataclass(frozen=True)
class ModelHeader:
    """One model in the chain: ``address`` is where its ID register sits."""

    model_id: int
    length: int
    address: int

    @property
    def body_address(self) -> int:
        return self.address + 2


def parse_model_header(address: int, words: Sequence[int]) -> ModelHeader | None:
    """The ``ID, L`` pair read at ``address``; ``None`` at the end marker (ID 0xFFFF)."""
    if len(words) != 2:
        raise InvalidMessage(f"sunspec.{address}", f"model header needs 2 words, got {len(words)}")
    if words[0] == END_MODEL_ID:
        return None
    return ModelHeader(model_id=words[0], length=words[1], address=address)


def next_model_address(header: ModelHeader) -> int:
    return header.address + header.length + 2


def walk_models(image: Mapping[int, int], base: int) -> list[ModelHeader]:
    """Every model header of a device image whose marker sits at ``base``.

    Raises :class:`InvalidMessage` when the marker is missing, a header was not read, or the
    chain runs past the 16-bit address space without an end marker.
    """
    if not is_sunspec_marker([image.get(base, -1), image.get(base + 1, -1)]):
        raise InvalidMessage(f"sunspec.{base}", "no 'SunS' marker at this base")
    headers: list[ModelHeader] = []
    address = base + 2
    while address <= 0xFFFE:
        if address not in image or address + 1 not in image:
            raise InvalidMessage(f"sunspec.{address}", "model header was not read")
        header = parse_model_header(address, [image[address], image[address + 1]])
        if header is None:
            return headers
        headers.append(header)
        address = next_model_address(header)
    raise InvalidMessage(f"sunspec.{base}", "model chain has no end marker")


# --- common model (1) ---------------------------------------------------------------------

_COMMON_STRINGS = (
    ("manufacturer", 0, 16),
    ("model", 16, 16),
    ("version", 40, 8),
    ("serial", 48, 16),
)
_COMMON_OPT = (32, 8)
_COMMON_LENGTH = 66  # Mn 16, Md 16, Opt 8, Vr 8, SN 16, DA 1, Pad 1 (older devices say 65)
_COMMON_MIN_WORDS = 64  # the strings; DA and Pad are optional for decoding


@dataclass(frozen=True)
class DeviceInfo:
    manufacturer: str
    model: str
    version: str
    serial: str


def decode_string(words: Sequence[int]) -> str:
    """A SunSpec string: two bytes per word, high byte first, NUL padded."""
    raw = b"".join(word.to_bytes(2, "big") for word in words)
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace").strip()


def encode_string(text: str, words: int, name: str = "string") -> list[int]:
    raw = text.encode("utf-8")
    if len(raw) > 2 * words:
        raise InvalidMessage(name, f"{text!r} is longer than {2 * words} bytes")
    raw = raw.ljust(2 * words, b"\x00")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def decode_common(words: Sequence[int]) -> DeviceInfo:
    """Model 1's body (65 or 66 words; at least the 64 string words) -> :class:`DeviceInfo`."""
    if len(words) < _COMMON_MIN_WORDS:
        raise InvalidMessage("sunspec.common", f"needs {_COMMON_MIN_WORDS} words, got {len(words)}")
    values = {
        name: decode_string(words[start : start + size]) for name, start, size in _COMMON_STRINGS
    }
    return DeviceInfo(**values)


def encode_common(info: DeviceInfo, device_address: int = 1) -> list[int]:
    """Model 1's body, :func:`model_length` (66) words, for the simulator."""
    body = [0] * _COMMON_LENGTH
    for name, start, size in _COMMON_STRINGS:
        body[start : start + size] = encode_string(getattr(info, name), size, name)
    body[_COMMON_OPT[0] : sum(_COMMON_OPT)] = [0] * _COMMON_OPT[1]
    body[64] = device_address
    body[65] = 0x8000  # Pad: "not implemented"
    return body


# --- numeric models as data ---------------------------------------------------------------


class _Family(Enum):
    INVERTER_INT = "inverter_int"
    INVERTER_FLOAT = "inverter_float"
    METER_INT = "meter_int"
    METER_FLOAT = "meter_float"


class _Row(NamedTuple):
    """One quantity: ``channel`` at ``total`` and ``channel_lN`` at ``phases[N-1]``.

    A single-phase model (0 phases) without a total takes the first phase point as the value.
    """

    channel: str
    unit: Unit
    total: int | None
    phases: tuple[int, ...]
    dtype: DataType
    sf: int | None = None  # body offset of the scale factor (int models)
    kind: ChannelKind = ChannelKind.INSTANT
    scale: float = 1.0


_I16, _U16, _ACC, _F32 = DataType.INT16, DataType.UINT16, DataType.ACC32, DataType.FLOAT32
_C = ChannelKind.COUNTER
_PCT = 0.01  # percent -> ratio

_TABLES: dict[_Family, tuple[_Row, ...]] = {
    _Family.INVERTER_INT: (  # model_101/102/103.json, L = 50
        _Row("current", Unit.AMPERE, 0, (1, 2, 3), _U16, 4),
        _Row("voltage", Unit.VOLT, None, (8, 9, 10), _U16, 11),  # PhVphA..C
        _Row("power", Unit.WATT, 12, (), _I16, 13),
        _Row("frequency", Unit.HERTZ, 14, (), _U16, 15),
        _Row("apparent_power", Unit.VOLT_AMPERE, 16, (), _I16, 17),
        _Row("reactive_power", Unit.VAR, 18, (), _I16, 19),
        _Row("power_factor", Unit.NONE, 20, (), _I16, 21, scale=_PCT),
        _Row("energy_production", Unit.WATT_HOUR, 22, (), _ACC, 24, _C),
        _Row("dc_current", Unit.AMPERE, 25, (), _U16, 26),
        _Row("dc_voltage", Unit.VOLT, 27, (), _U16, 28),
        _Row("dc_power", Unit.WATT, 29, (), _I16, 30),
        _Row("temperature", Unit.CELSIUS, 31, (), _I16, 35),  # TmpCab
    ),
    _Family.INVERTER_FLOAT: (  # model_111/112/113.json, L = 60
        _Row("current", Unit.AMPERE, 0, (2, 4, 6), _F32),
        _Row("voltage", Unit.VOLT, None, (14, 16, 18), _F32),
        _Row("power", Unit.WATT, 20, (), _F32),
        _Row("frequency", Unit.HERTZ, 22, (), _F32),
        _Row("apparent_power", Unit.VOLT_AMPERE, 24, (), _F32),
        _Row("reactive_power", Unit.VAR, 26, (), _F32),
        _Row("power_factor", Unit.NONE, 28, (), _F32, scale=_PCT),
        _Row("energy_production", Unit.WATT_HOUR, 30, (), _F32, kind=_C),
        _Row("dc_current", Unit.AMPERE, 32, (), _F32),
        _Row("dc_voltage", Unit.VOLT, 34, (), _F32),
        _Row("dc_power", Unit.WATT, 36, (), _F32),
        _Row("temperature", Unit.CELSIUS, 38, (), _F32),
    ),
    _Family.METER_INT: (  # model_201..204.json, L = 105
        _Row("current", Unit.AMPERE, 0, (1, 2, 3), _I16, 4),
        _Row("voltage", Unit.VOLT, 5, (6, 7, 8), _I16, 13),  # PhV: average line-to-neutral
        _Row("frequency", Unit.HERTZ, 14, (), _I16, 15),
        _Row("power", Unit.WATT, 16, (17, 18, 19), _I16, 20),
        _Row("apparent_power", Unit.VOLT_AMPERE, 21, (), _I16, 25),
        _Row("reactive_power", Unit.VAR, 26, (), _I16, 30),
        _Row("power_factor", Unit.NONE, 31, (), _I16, 35, scale=_PCT),
        _Row("energy_export", Unit.WATT_HOUR, 36, (38, 40, 42), _ACC, 52, _C),
        _Row("energy_import", Unit.WATT_HOUR, 44, (46, 48, 50), _ACC, 52, _C),
    ),
    _Family.METER_FLOAT: (  # model_211..214.json, L = 124
        _Row("current", Unit.AMPERE, 0, (2, 4, 6), _F32),
        _Row("voltage", Unit.VOLT, 8, (10, 12, 14), _F32),
        _Row("frequency", Unit.HERTZ, 24, (), _F32),
        _Row("power", Unit.WATT, 26, (28, 30, 32), _F32),
        _Row("apparent_power", Unit.VOLT_AMPERE, 34, (), _F32),
        _Row("reactive_power", Unit.VAR, 42, (), _F32),
        _Row("power_factor", Unit.NONE, 50, (), _F32, scale=_PCT),
        _Row("energy_export", Unit.WATT_HOUR, 58, (60, 62, 64), _F32, kind=_C),
        _Row("energy_import", Unit.WATT_HOUR, 66, (68, 70, 72), _F32, kind=_C),
    ),
}


class _ModelSpec(NamedTuple):
    family: _Family
    phases: int  # 0: single-phase names (``voltage``), 2 or 3: ``voltage_l1..``
    length: int


_MODELS: dict[int, _ModelSpec] = {
    101: _ModelSpec(_Family.INVERTER_INT, 0, 50),
    102: _ModelSpec(_Family.INVERTER_INT, 2, 50),
    103: _ModelSpec(_Family.INVERTER_INT, 3, 50),
    111: _ModelSpec(_Family.INVERTER_FLOAT, 0, 60),
    112: _ModelSpec(_Family.INVERTER_FLOAT, 2, 60),
    113: _ModelSpec(_Family.INVERTER_FLOAT, 3, 60),
    201: _ModelSpec(_Family.METER_INT, 0, 105),
    202: _ModelSpec(_Family.METER_INT, 2, 105),
    203: _ModelSpec(_Family.METER_INT, 3, 105),
    204: _ModelSpec(_Family.METER_INT, 3, 105),
    211: _ModelSpec(_Family.METER_FLOAT, 0, 124),
    212: _ModelSpec(_Family.METER_FLOAT, 2, 124),
    213: _ModelSpec(_Family.METER_FLOAT, 3, 124),
    214: _ModelSpec(_Family.METER_FLOAT, 3, 124),
}

SUPPORTED_MODELS: frozenset[int] = frozenset({COMMON_MODEL_ID, *_MODELS})
INVERTER_MODELS: frozenset[int] = frozenset(
    m for m, s in _MODELS.items() if s.family in (_Family.INVERTER_INT, _Family.INVERTER_FLOAT)
)
METER_MODELS: frozenset[int] = frozenset(_MODELS) - INVERTER_MODELS


def model_length(model_id: int) -> int:
    """``L`` as the SunSpec definition gives it (model 1: 66, with DA and Pad)."""
    if model_id == COMMON_MODEL_ID:
        return _COMMON_LENGTH
    return _spec(model_id).length


def _spec(model_id: int) -> _ModelSpec:
    try:
        return _MODELS[model_id]
    except KeyError:
        raise InvalidMessage(f"sunspec.{model_id}", "model is not supported") from None


def _row_points(row: _Row, phases: int) -> list[tuple[str, int]]:
    """(channel, body offset) pairs the row yields for a model with ``phases`` phases."""
    points: list[tuple[str, int]] = []
    total = row.total if row.total is not None or phases else row.phases[0]
    if total is not None:
        points.append((row.channel, total))
    points += [
        (f"{row.channel}_l{n}", row.phases[n - 1]) for n in range(1, phases + 1) if row.phases
    ]
    return points


def model_register_map(model_id: int, body_address: int) -> RegisterMap:
    """The model's points as fields at absolute addresses (``body_address = header.address+2``).

    Int models set ``sf_address`` to their scale-factor register. Model 1 has no numeric
    points: its map is empty (read it with :func:`decode_common`). Unsupported ids raise
    :class:`InvalidMessage`.
    """
    if model_id == COMMON_MODEL_ID:
        return RegisterMap("sunspec_1", RegisterKind.HOLDING, (), MAX_BLOCK_WORDS)
    spec = _spec(model_id)
    fields = tuple(
        Field(
            channel,
            body_address + offset,
            row.dtype,
            row.unit,
            scale=row.scale,
            kind=row.kind,
            sf_address=None if row.sf is None else body_address + row.sf,
        )
        for row in _TABLES[spec.family]
        for channel, offset in _row_points(row, spec.phases)
    )
    return RegisterMap(f"sunspec_{model_id}", RegisterKind.HOLDING, fields, MAX_BLOCK_WORDS)


# --- building device images (simulator, tests) --------------------------------------------


def encode_model_body(
    model_id: int, values: Mapping[str, float | None], sf: Mapping[int, int] | None = None
) -> list[int]:
    """A full body of ``model_length(model_id)`` words from channel values.

    ``sf`` keys are body offsets of scale-factor registers. Registers no channel uses
    (status, events, unused points) are 0.
    """
    words = encode_map(model_register_map(model_id, 0), values, sf)
    return [words.get(offset, 0) for offset in range(model_length(model_id))]


def build_image(base: int, models: Sequence[tuple[int, Sequence[int]]]) -> dict[int, int]:
    """A device's register image: marker, ``(model_id, body)`` models in order, end marker.

    Each model's ``L`` is the length of its body, as a device would report it.
    """
    image = {base: SUNS_MARKER[0], base + 1: SUNS_MARKER[1]}
    address = base + 2
    for model_id, body in models:
        image[address], image[address + 1] = model_id, len(body)
        image.update({address + 2 + i: word for i, word in enumerate(body)})
        address += len(body) + 2
    image[address], image[address + 1] = END_MODEL_ID, 0
    return image
