"""SunSpec: chain walking, the common model, scale factors and markers, every supported model."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import InvalidMessage
from protocols.modbus import (
    INVERTER_MODELS,
    METER_MODELS,
    SCAN_BASES,
    SUPPORTED_MODELS,
    ChannelKind,
    DataType,
    DeviceInfo,
    ModelHeader,
    RegisterKind,
    build_image,
    decode_common,
    decode_map,
    decode_words,
    encode_common,
    encode_map,
    encode_model_body,
    is_sunspec_marker,
    model_length,
    model_register_map,
    next_model_address,
    parse_model_header,
    walk_models,
)

INFO = DeviceInfo(
    manufacturer="SolarEdge", model="SE7K-RW0TEBNN4", version="0004.0007.0026", serial="7E16F37C"
)


def test_marker_is_suns() -> None:
    assert is_sunspec_marker([0x5375, 0x6E53])
    assert not is_sunspec_marker([0x6E53, 0x5375])
    assert SCAN_BASES == (40000, 0, 50000)


def test_header_parse_and_next_address() -> None:
    header = parse_model_header(40069, [103, 50])
    assert header == ModelHeader(model_id=103, length=50, address=40069)
    assert next_model_address(header) == 40121
    assert parse_model_header(40121, [0xFFFF, 0]) is None
    with pytest.raises(InvalidMessage):
        parse_model_header(40000, [103])


def test_walks_a_hand_built_solaredge_style_chain() -> None:
    """SolarEdge layout: common (L=65) at 40002, inverter 103 at 40069, meter common at 40121,
    meter 203 at 40188; addresses computed by hand, not by the code under test."""
    image: dict[int, int] = {40000: 0x5375, 40001: 0x6E53}
    image.update({40002: 1, 40003: 65})
    image.update(dict(enumerate(encode_common(INFO)[:65], start=40004)))
    image.update({40069: 103, 40070: 50})
    image.update({a: 0 for a in range(40071, 40121)})
    image.update({40121: 1, 40122: 65})
    image.update({a: 0 for a in range(40123, 40188)})
    image.update({40188: 203, 40189: 105})
    image.update({a: 0 for a in range(40190, 40295)})
    image.update({40295: 0xFFFF, 40296: 0})
    headers = walk_models(image, 40000)
    assert [(h.model_id, h.address, h.length) for h in headers] == [
        (1, 40002, 65),
        (103, 40069, 50),
        (1, 40121, 65),
        (203, 40188, 105),
    ]
    assert decode_common([image[a] for a in range(40004, 40069)]) == INFO


@pytest.mark.parametrize("base", SCAN_BASES)
@pytest.mark.parametrize("model_id", [103, 203])
def test_walks_marker_common_model_and_end_at_every_base(base: int, model_id: int) -> None:
    body = encode_model_body(model_id, {"power": 1500.0})
    image = build_image(base, [(1, encode_common(INFO)), (model_id, body)])
    headers = walk_models(image, base)
    assert [h.model_id for h in headers] == [1, model_id]
    assert headers[1].address == base + 2 + 2 + model_length(1)
    common = headers[0]
    assert decode_common([image[common.body_address + i] for i in range(common.length)]) == INFO
    rmap = model_register_map(model_id, headers[1].body_address)
    assert decode_map(rmap, image)["power"] == 1500.0


def test_chain_without_marker_or_end_is_invalid() -> None:
    with pytest.raises(InvalidMessage):
        walk_models({0: 1, 1: 2}, 0)
    image = build_image(0, [(1, encode_common(INFO))])
    del image[max(image)]  # the end marker's L word was not read
    with pytest.raises(InvalidMessage):
        walk_models(image, 0)


def test_common_model_strings_round_trip_and_padding() -> None:
    body = encode_common(INFO, device_address=7)
    assert len(body) == model_length(1) == 66
    assert body[0] == int.from_bytes(b"So", "big")
    assert body[64] == 7
    assert decode_common(body) == INFO
    assert decode_common(body[:65]) == INFO  # older devices: L = 65
    with pytest.raises(InvalidMessage):
        decode_common(body[:40])
    with pytest.raises(InvalidMessage, match="serial"):
        encode_common(DeviceInfo("a", "b", "c", "x" * 33))


def test_model_lengths_follow_the_spec() -> None:
    assert {m: model_length(m) for m in (101, 103, 111, 113, 201, 203, 211, 213)} == {
        101: 50,
        103: 50,
        111: 60,
        113: 60,
        201: 105,
        203: 105,
        211: 124,
        213: 124,
    }
    expected = {1, 101, 102, 103, 111, 112, 113, 201, 202, 203, 204, 211, 212, 213, 214}
    assert expected == SUPPORTED_MODELS


def test_unsupported_model_is_invalid() -> None:
    with pytest.raises(InvalidMessage):
        model_register_map(160, 40002)
    with pytest.raises(InvalidMessage):
        model_length(64110)


def test_model_103_points_sit_at_spec_offsets() -> None:
    rmap = model_register_map(103, 40071)
    assert rmap.register_kind is RegisterKind.HOLDING
    w = rmap.field("power")
    assert (w.address, w.dtype, w.sf_address) == (40071 + 12, DataType.INT16, 40071 + 13)
    wh = rmap.field("energy_production")
    assert (wh.address, wh.dtype, wh.sf_address, wh.kind) == (
        40093,
        DataType.ACC32,
        40095,
        ChannelKind.COUNTER,
    )
    assert rmap.field("voltage_l3").address == 40071 + 10
    assert rmap.field("temperature").sf_address == 40071 + 35


def test_model_203_points_sit_at_spec_offsets() -> None:
    rmap = model_register_map(203, 0)
    offsets = {
        "current": 0,
        "current_l3": 3,
        "voltage": 5,
        "voltage_l1": 6,
        "frequency": 14,
        "power": 16,
        "power_l2": 18,
        "energy_export": 36,
        "energy_import": 44,
        "energy_import_l3": 50,
    }
    assert {c: rmap.field(c).address for c in offsets} == offsets
    assert rmap.field("energy_import").sf_address == 52
    assert rmap.field("power_l1").sf_address == 20


def test_model_213_float_points_have_no_scale_factor() -> None:
    rmap = model_register_map(213, 0)
    assert rmap.field("power").address == 26
    assert rmap.field("energy_import").address == 66
    assert all(f.dtype is DataType.FLOAT32 and f.sf_address is None for f in rmap.fields)


def test_single_phase_models_use_single_phase_names() -> None:
    for model_id in (101, 111, 201, 211):
        channels = set(model_register_map(model_id, 0).channels)
        assert {"voltage", "current", "power", "frequency"} <= channels
        assert not any(c.endswith(("_l1", "_l2", "_l3")) for c in channels)
    assert "voltage_l2" in model_register_map(202, 0).channels
    assert "voltage_l3" not in model_register_map(202, 0).channels


@pytest.mark.parametrize(
    ("raw", "sf", "expected"),
    [(12345, -1, 1234.5), (50, 2, 5000.0), (-250, 0, -250.0), (2301, -1, 230.1)],
)
def test_inverter_scale_factors_positive_and_negative(raw: int, sf: int, expected: float) -> None:
    rmap = model_register_map(103, 1000)
    body = [0] * 50
    body[12], body[13] = raw & 0xFFFF, sf & 0xFFFF
    image = {1000 + i: w for i, w in enumerate(body)}
    assert decode_map(rmap, image)["power"] == expected


def test_power_factor_percent_becomes_a_ratio() -> None:
    body = [0] * 105
    body[31], body[35] = 9500, (-2) & 0xFFFF  # 95.00 %
    values = decode_map(model_register_map(203, 0), dict(enumerate(body)))
    assert values["power_factor"] == 0.95


@pytest.mark.parametrize("model_id", sorted(SUPPORTED_MODELS - {1}))
def test_every_not_implemented_marker_reads_none_never_zero(model_id: int) -> None:
    rmap = model_register_map(model_id, 0)
    markers = {"int16": 0x8000, "uint16": 0xFFFF}
    image: dict[int, int] = {}
    for field in rmap.fields:
        if field.dtype is DataType.FLOAT32:
            image[field.address], image[field.address + 1] = 0x7FC0, 0
        elif field.dtype is DataType.ACC32:
            image[field.address], image[field.address + 1] = 0, 0
        else:
            image[field.address] = markers[field.dtype.value]
        if field.sf_address is not None:
            image[field.sf_address] = 0  # a valid SF: the point's own marker must win
    assert set(decode_map(rmap, image).values()) == {None}


@pytest.mark.parametrize(
    "model_id", sorted(SUPPORTED_MODELS - {1} - METER_MODELS - {111, 112, 113})
)
def test_scale_factor_marker_reads_none(model_id: int) -> None:
    rmap = model_register_map(model_id, 0)
    image = encode_map(rmap, {"power": 100.0})
    image[rmap.field("power").sf_address or 0] = 0x8000
    assert decode_map(rmap, image)["power"] is None


def test_sign_convention_grid_import_positive_pv_production_positive() -> None:
    meter = model_register_map(213, 0)
    values = decode_map(meter, encode_map(meter, {"power": -800.0, "energy_export": 5000.0}))
    assert values["power"] == -800.0  # exporting
    assert values["energy_export"] == 5000.0
    inverter = model_register_map(113, 0)
    assert decode_map(inverter, encode_map(inverter, {"power": 3000.0}))["power"] == 3000.0


def _values(channel: str, unsigned: bool) -> st.SearchStrategy[float]:
    low = 0.0 if unsigned else -1.0
    if channel.startswith("energy"):
        return st.floats(1, 1e6)
    if channel.startswith("power_factor"):
        return st.floats(low, 1)
    if channel.startswith(("voltage", "dc_voltage")):
        return st.floats(0, 600)
    if channel.startswith("frequency"):
        return st.floats(45, 65)
    if channel.startswith("temperature"):
        return st.floats(-40, 120)
    return st.floats(low * 2e4, 2e4)


@pytest.mark.parametrize("model_id", sorted(SUPPORTED_MODELS - {1}))
@settings(max_examples=25)
@given(data=st.data())
def test_encode_then_decode_round_trips_within_scale_factor_rounding(
    model_id: int, data: st.DataObject
) -> None:
    rmap = model_register_map(model_id, 40071)
    unsigned = {DataType.UINT16, DataType.ACC32}
    values = {
        f.channel: data.draw(st.none() | _values(f.channel, f.dtype in unsigned), label=f.channel)
        for f in rmap.fields
    }
    image = encode_map(rmap, values)
    decoded = decode_map(rmap, image)
    for field in rmap.fields:
        value, result = values[field.channel], decoded[field.channel]
        if value is None:
            assert result is None
            continue
        assert result is not None
        if field.sf_address is None:
            assert math.isclose(result, value, rel_tol=1e-6, abs_tol=1e-30)
        else:
            sf = decode_words(DataType.SF, [image[field.sf_address]])
            assert sf is not None
            assert abs(result - value) <= 0.5 * 10.0**sf * field.scale * (1 + 1e-9) + 1e-9 * abs(
                value
            )


def test_inverter_and_meter_model_sets() -> None:
    assert {101, 102, 103, 111, 112, 113} == INVERTER_MODELS
    assert {201, 202, 203, 204, 211, 212, 213, 214} == METER_MODELS
    assert "energy_production" in model_register_map(101, 0).channels
    assert model_register_map(1, 40004).fields == ()
