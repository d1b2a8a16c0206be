"""Words in, canonical values out (and back, for the simulator). Pure: no I/O.

Every data type has one "not implemented" marker (SunSpec's; for float32 a NaN). A marker
decodes to ``None``, never to 0, so a missing point can never pass for a real zero reading:

- float32: any NaN (encoded 0x7FC0 0x0000); +/-inf also decodes to ``None``. High word first.
- int16 0x8000, uint16 0xFFFF, sunssf 0x8000.
- int32 0x8000 0x0000, uint32 0xFFFF 0xFFFF, acc32 0x0000 0x0000 (an accumulator never reads 0).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Mapping, Sequence

from protocols.errors import InvalidMessage
from protocols.modbus.registers import DataType, Field, RegisterMap

_FLOAT32_NAN = (0x7FC0, 0x0000)
_INT_RANGES: dict[DataType, tuple[int, int, int]] = {
    # dtype: (min, max, marker) of the raw integer, marker in the same signedness.
    DataType.INT16: (-0x8000, 0x7FFF, -0x8000),
    DataType.UINT16: (0, 0xFFFF, 0xFFFF),
    DataType.SF: (-0x8000, 0x7FFF, -0x8000),
    DataType.INT32: (-0x8000_0000, 0x7FFF_FFFF, -0x8000_0000),
    DataType.UINT32: (0, 0xFFFF_FFFF, 0xFFFF_FFFF),
    DataType.ACC32: (0, 0xFFFF_FFFF, 0),
}
_SIGNED = frozenset({DataType.INT16, DataType.SF, DataType.INT32})
# Scale factors tried when the simulator lets encode_map choose one (most precise first).
_SF_CHOICES = range(-3, 11)


def _check_words(dtype: DataType, words: Sequence[int]) -> None:
    if len(words) != dtype.words:
        raise InvalidMessage(dtype.value, f"needs {dtype.words} word(s), got {len(words)}")
    for word in words:
        if not 0 <= word <= 0xFFFF:
            raise InvalidMessage(dtype.value, f"register word {word!r} is not 16-bit")


def _raw_int(dtype: DataType, words: Sequence[int]) -> int:
    raw = words[0] if dtype.words == 1 else (words[0] << 16) | words[1]
    bits = 16 * dtype.words
    if dtype in _SIGNED and raw >= 1 << (bits - 1):
        raw -= 1 << bits
    return raw


def decode_words(dtype: DataType, words: Sequence[int]) -> float | None:
    """Decode one point's words (high word first) to a number; a marker gives ``None``.

    Raises :class:`InvalidMessage` when ``words`` has the wrong length for ``dtype``.
    """
    _check_words(dtype, words)
    if dtype is DataType.FLOAT32:
        value: float = struct.unpack(">f", struct.pack(">HH", words[0], words[1]))[0]
        return value if math.isfinite(value) else None
    raw = _raw_int(dtype, words)
    if raw == _INT_RANGES[dtype][2]:
        return None
    return float(raw)


def encode_value(dtype: DataType, value: float | None) -> list[int]:
    """Inverse of :func:`decode_words`: ``None`` gives the marker.

    Integer types round to the nearest integer. A value the type cannot carry (out of range,
    equal to the marker, e.g. an acc32 of 0, or not finite) raises :class:`InvalidMessage`.
    """
    if dtype is DataType.FLOAT32:
        if value is None:
            return list(_FLOAT32_NAN)
        try:
            high, low = struct.unpack(">HH", struct.pack(">f", value))
        except (OverflowError, struct.error) as exc:
            raise InvalidMessage(dtype.value, f"{value!r} does not fit a float32") from exc
        return [high, low]
    low_bound, high_bound, marker = _INT_RANGES[dtype]
    if value is None:
        raw = marker
    else:
        if not math.isfinite(value):
            raise InvalidMessage(dtype.value, f"{value!r} is not a finite number")
        raw = round(value)
        if not low_bound <= raw <= high_bound or raw == marker:
            raise InvalidMessage(
                dtype.value, f"{value!r} is outside {low_bound}..{high_bound} or is the marker"
            )
    bits = 16 * dtype.words
    raw &= (1 << bits) - 1
    return [raw] if dtype.words == 1 else [raw >> 16, raw & 0xFFFF]


def _words_at(image: Mapping[int, int], address: int, count: int, channel: str) -> list[int]:
    try:
        return [image[address + i] for i in range(count)]
    except KeyError as exc:
        raise InvalidMessage(channel, f"register {exc.args[0]} was not read") from exc


def _apply_sf(raw: float, sf: int) -> float:
    # Divide for negative powers: 2301 / 10 is 230.1 exactly rounded, 2301 * 0.1 is not.
    return raw * 10.0**sf if sf >= 0 else raw / 10.0**-sf


def _scaled(value: float, factor: float) -> float:
    # A factor like 0.01 is not exact in binary: dividing by 100 gives 0.95, not 0.9500000001.
    inverse = 1.0 / factor
    if abs(factor) < 1.0 and inverse.is_integer():
        return value / inverse
    return value * factor


def decode_field(field: Field, image: Mapping[int, int]) -> float | None:
    """One channel's canonical value from a register image (see :func:`decode_map`)."""
    raw = decode_words(
        field.dtype, _words_at(image, field.address, field.dtype.words, field.channel)
    )
    if raw is None:
        return None
    if field.sf_address is not None:
        sf = decode_words(DataType.SF, _words_at(image, field.sf_address, 1, field.channel))
        if sf is None:
            return None
        raw = _apply_sf(raw, int(sf))
    value = _scaled(raw, field.scale) * field.sign
    return value + 0.0  # -0.0 (a zero export) reads as 0.0


def decode_map(rmap: RegisterMap, image: Mapping[int, int]) -> dict[str, float | None]:
    """Every channel of ``rmap`` in canonical units, sign and scale applied.

    ``image`` maps absolute register addresses to the 16-bit words read (the blocks of
    :func:`~protocols.modbus.registers.plan_blocks`). A marker, or a scale factor that is a
    marker, gives ``None``. A register missing from the image raises :class:`InvalidMessage`
    naming the channel.
    """
    return {field.channel: decode_field(field, image) for field in rmap.fields}


def _device_units(field: Field, value: float) -> float:
    return _scaled(value, 1.0 / field.scale) * field.sign


def _fits(field: Field, value: float | None, sf: int) -> bool:
    if value is None or field.dtype is DataType.FLOAT32:
        return True
    low_bound, high_bound, marker = _INT_RANGES[field.dtype]
    device_value = _device_units(field, value)
    if device_value < low_bound:  # e.g. negative into uint16: no SF may round it away to 0
        return False
    raw = round(_apply_sf(device_value, -sf))
    return low_bound <= raw <= high_bound and raw != marker


def choose_scale_factors(
    rmap: RegisterMap, values: Mapping[str, float | None], skip: Collection[int] = ()
) -> dict[int, int]:
    """Per scale-factor register (but those in ``skip``), the most precise SF (-3..10) that
    every field sharing it can carry; :class:`InvalidMessage` when none can."""
    groups: dict[int, list[Field]] = {}
    for field in rmap.fields:
        if field.sf_address is not None and field.sf_address not in skip:
            groups.setdefault(field.sf_address, []).append(field)
    chosen: dict[int, int] = {}
    for address, fields in groups.items():
        for sf in _SF_CHOICES:
            if all(_fits(f, values.get(f.channel), sf) for f in fields):
                chosen[address] = sf
                break
        else:
            raise InvalidMessage(fields[0].channel, "no scale factor fits these values")
    return chosen


def encode_map(
    rmap: RegisterMap,
    values: Mapping[str, float | None],
    sf: Mapping[int, int] | None = None,
) -> dict[int, int]:
    """Inverse of :func:`decode_map` for the simulator: canonical values -> register image.

    A channel absent from ``values`` (or ``None``) is written as its marker. For SunSpec int
    fields, ``sf`` fixes scale-factor registers (address -> int16 power of ten); those not
    given are chosen by :func:`choose_scale_factors`. The image holds the SF registers too.
    Raises :class:`InvalidMessage` naming the channel when a value cannot be carried.
    """
    scale_factors = {**choose_scale_factors(rmap, values, skip=sf or {}), **(sf or {})}
    image: dict[int, int] = {}
    for address, power in scale_factors.items():
        image[address] = encode_value(DataType.SF, power)[0]
    for field in rmap.fields:
        value = values.get(field.channel)
        raw: float | None = None
        if value is not None:
            raw = _device_units(field, value)
            if field.sf_address is not None:
                raw = _apply_sf(raw, -scale_factors[field.sf_address])
        try:
            words = encode_value(field.dtype, raw)
        except InvalidMessage as exc:
            raise InvalidMessage(field.channel, exc.reason) from exc
        for offset, word in enumerate(words):
            image[field.address + offset] = word
    return image
