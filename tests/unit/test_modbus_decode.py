"""Register words <-> values: data types, markers, scale factors, block planning."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import InvalidMessage
from protocols.modbus import (
    ChannelKind,
    DataType,
    Field,
    RegisterKind,
    RegisterMap,
    decode_map,
    decode_words,
    encode_map,
    encode_value,
    plan_blocks,
)
from protocols.models import Unit

INT_RANGES = {
    DataType.INT16: (-0x7FFF, 0x7FFF),  # -0x8000 is the marker
    DataType.UINT16: (0, 0xFFFE),
    DataType.SF: (-10, 10),
    DataType.INT32: (-0x7FFF_FFFF, 0x7FFF_FFFF),
    DataType.UINT32: (0, 0xFFFF_FFFE),
    DataType.ACC32: (1, 0xFFFF_FFFF),
}

MARKERS = [
    (DataType.INT16, [0x8000]),
    (DataType.UINT16, [0xFFFF]),
    (DataType.SF, [0x8000]),
    (DataType.INT32, [0x8000, 0x0000]),
    (DataType.UINT32, [0xFFFF, 0xFFFF]),
    (DataType.ACC32, [0x0000, 0x0000]),
    (DataType.FLOAT32, [0x7FC0, 0x0000]),
]


@pytest.mark.parametrize(
    ("dtype", "words", "expected"),
    [
        (DataType.FLOAT32, [0x4366, 0x0000], 230.0),  # Eastron: 230 V, high word first
        (DataType.FLOAT32, [0x4248, 0x0000], 50.0),
        (DataType.FLOAT32, [0xC4BB, 0x8000], -1500.0),
        (DataType.FLOAT32, [0x0000, 0x0000], 0.0),
        (DataType.INT16, [0xFFFF], -1.0),
        (DataType.INT16, [0x7FFF], 32767.0),
        (DataType.UINT16, [0x8000], 32768.0),
        (DataType.SF, [0xFFFE], -2.0),
        (DataType.INT32, [0xFFFF, 0xFFFE], -2.0),
        (DataType.UINT32, [0x0001, 0x0000], 65536.0),
        (DataType.ACC32, [0x0012, 0xD687], 1234567.0),
    ],
)
def test_words_decode_to_the_published_value(
    dtype: DataType, words: list[int], expected: float
) -> None:
    assert decode_words(dtype, words) == expected


@pytest.mark.parametrize(("dtype", "words"), MARKERS)
def test_not_implemented_marker_decodes_to_none_never_zero(
    dtype: DataType, words: list[int]
) -> None:
    assert decode_words(dtype, words) is None
    assert encode_value(dtype, None) == words


@pytest.mark.parametrize("words", [[0x7F80, 0x0000], [0xFF80, 0x0000], [0x7FC0, 0x0001]])
def test_float32_nan_and_infinity_decode_to_none(words: list[int]) -> None:
    assert decode_words(DataType.FLOAT32, words) is None


@pytest.mark.parametrize(
    ("dtype", "words"),
    [
        (DataType.FLOAT32, [0x4366]),
        (DataType.INT16, [1, 2]),
        (DataType.ACC32, []),
        (DataType.UINT16, [0x10000]),
    ],
)
def test_wrong_word_count_or_width_is_invalid(dtype: DataType, words: list[int]) -> None:
    with pytest.raises(InvalidMessage):
        decode_words(dtype, words)


@pytest.mark.parametrize(
    ("dtype", "value"),
    [
        (DataType.INT16, 40000.0),
        (DataType.INT16, -32768.0),  # the marker itself
        (DataType.UINT16, -1.0),
        (DataType.ACC32, 0.0),  # an accumulator cannot say 0
        (DataType.UINT32, math.inf),
        (DataType.FLOAT32, 1e39),
    ],
)
def test_value_the_type_cannot_carry_is_rejected(dtype: DataType, value: float) -> None:
    with pytest.raises(InvalidMessage):
        encode_value(dtype, value)


@pytest.mark.parametrize("dtype", sorted(INT_RANGES))
@given(data=st.data())
def test_integer_types_round_trip(dtype: DataType, data: st.DataObject) -> None:
    low, high = INT_RANGES[dtype]
    value = data.draw(st.integers(low, high))
    words = encode_value(dtype, value)
    assert len(words) == dtype.words
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode_words(dtype, words) == value


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_round_trips_exactly(value: float) -> None:
    assert decode_words(DataType.FLOAT32, encode_value(DataType.FLOAT32, value)) == value


def _sf_map(dtype: DataType = DataType.INT16, scale: float = 1.0, sign: int = 1) -> RegisterMap:
    return RegisterMap(
        "test",
        RegisterKind.HOLDING,
        (Field("power", 100, dtype, Unit.WATT, scale=scale, sign=sign, sf_address=105),),
    )


@pytest.mark.parametrize(
    ("raw", "sf", "expected"),
    [(2301, -1, 230.1), (50, 2, 5000.0), (-1234, 0, -1234.0), (5, -3, 0.005), (7, 3, 7000.0)],
)
def test_scale_factor_applies_power_of_ten(raw: int, sf: int, expected: float) -> None:
    image = {100: encode_value(DataType.INT16, raw)[0], 105: encode_value(DataType.SF, sf)[0]}
    assert decode_map(_sf_map(), image) == {"power": expected}


def test_scale_factor_marker_makes_the_value_none() -> None:
    assert decode_map(_sf_map(), {100: 1234, 105: 0x8000}) == {"power": None}


def test_sign_and_scale_apply_after_the_scale_factor() -> None:
    rmap = _sf_map(scale=1000.0, sign=-1)
    assert decode_map(rmap, {100: 15, 105: 0xFFFF}) == {"power": -1500.0}
    assert math.copysign(1.0, decode_map(rmap, {100: 0, 105: 0})["power"] or 0.0) == 1.0


def test_missing_register_names_the_channel() -> None:
    with pytest.raises(InvalidMessage, match="power") as caught:
        decode_map(_sf_map(), {100: 1})
    assert caught.value.field == "power"
    with pytest.raises(InvalidMessage, match="power"):
        decode_map(_sf_map(DataType.INT32), {100: 1, 105: 0})


def test_encode_map_uses_the_given_scale_factor() -> None:
    image = encode_map(_sf_map(), {"power": 230.1}, sf={105: -1})
    assert image == {100: 2301, 105: 0xFFFF}
    assert decode_map(_sf_map(), image) == {"power": 230.1}


def test_encode_map_chooses_a_scale_factor_that_fits_every_field_sharing_it() -> None:
    rmap = RegisterMap(
        "test",
        RegisterKind.HOLDING,
        (
            Field("power", 0, DataType.INT16, Unit.WATT, sf_address=3),
            Field("power_l1", 1, DataType.INT16, Unit.WATT, sf_address=3),
        ),
    )
    image = encode_map(rmap, {"power": 25000.0, "power_l1": 1.5})
    decoded = decode_map(rmap, image)
    assert decoded["power"] == 25000.0
    assert decoded["power_l1"] == pytest.approx(1.5, abs=0.5)


def test_encode_map_writes_markers_for_absent_channels() -> None:
    assert decode_map(_sf_map(), encode_map(_sf_map(), {})) == {"power": None}


def test_encode_map_names_the_channel_that_cannot_be_carried() -> None:
    with pytest.raises(InvalidMessage, match="power"):
        encode_map(_sf_map(DataType.UINT16), {"power": -5.0})
    with pytest.raises(InvalidMessage, match="power"):
        encode_map(_sf_map(), {"power": 1e6}, sf={105: 0})


# --- block planning -------------------------------------------------------------------------

_DTYPES = [DataType.FLOAT32, DataType.INT16, DataType.UINT16, DataType.ACC32, DataType.INT32]


@st.composite
def _fields(draw: st.DrawFn) -> tuple[Field, ...]:
    """A realistic layout: fields and scale-factor registers that do not overlap."""
    address = draw(st.integers(0, 100))
    sf_addresses: list[int] = []
    layout: list[tuple[int, DataType]] = []
    for _ in range(draw(st.integers(1, 40))):
        address += draw(st.integers(0, 20))
        if draw(st.booleans()) and len(layout) > 0:
            sf_addresses.append(address)
            address += 1
        else:
            dtype = draw(st.sampled_from(_DTYPES))
            layout.append((address, dtype))
            address += dtype.words
    if not layout:
        layout.append((address, DataType.UINT16))
    return tuple(
        Field(
            f"c{index}",
            at,
            dtype,
            Unit.WATT,
            sf_address=draw(st.none() | st.sampled_from(sf_addresses)) if sf_addresses else None,
        )
        for index, (at, dtype) in enumerate(layout)
    )


@given(fields=_fields(), max_block=st.integers(2, 125), gap=st.integers(0, 16))
def test_plan_blocks_covers_every_field_and_respects_the_block_limit(
    fields: tuple[Field, ...], max_block: int, gap: int
) -> None:
    blocks = plan_blocks(fields, max_block, gap)
    assert all(1 <= b.count <= max_block for b in blocks)
    assert all(a.address + a.count <= b.address for a, b in pairwise(blocks))
    spans = [(f.address, f.dtype.words) for f in fields]
    spans += [(f.sf_address, 1) for f in fields if f.sf_address is not None]
    for address, words in spans:
        assert any(b.address <= address and address + words <= b.address + b.count for b in blocks)


def test_plan_blocks_merges_neighbours_into_one_request() -> None:
    fields = (
        Field("a", 0, DataType.FLOAT32, Unit.VOLT),
        Field("b", 6, DataType.FLOAT32, Unit.AMPERE),
        Field("c", 100, DataType.FLOAT32, Unit.WATT, kind=ChannelKind.COUNTER),
    )
    blocks = plan_blocks(fields, 80)
    assert [(b.address, b.count) for b in blocks] == [(0, 8), (100, 2)]
