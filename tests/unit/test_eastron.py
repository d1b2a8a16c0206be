"""Eastron SDM120 / SDM630 / SDM72 maps against the vendors' published register tables."""

from __future__ import annotations

import math
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.modbus import (
    METER_MAPS,
    SDM72,
    SDM120,
    SDM630,
    ChannelKind,
    DataType,
    RegisterKind,
    RegisterMap,
    decode_map,
    encode_map,
    plan_blocks,
)
from protocols.models import CHANNEL_PATTERN, Unit

# Addresses from Eastron's protocol documents (0-based; the manuals say 30001 for 0x0000).
PUBLISHED = {
    "sdm630": {
        "voltage_l1": 0x0000,
        "voltage_l2": 0x0002,
        "voltage_l3": 0x0004,
        "current_l1": 0x0006,
        "current_l3": 0x000A,
        "power_l1": 0x000C,
        "power_l3": 0x0010,
        "current": 0x0030,
        "power": 0x0034,
        "power_factor": 0x003E,
        "frequency": 0x0046,
        "energy_import": 0x0048,
        "energy_export": 0x004A,
        "current_n": 0x00E0,
        "energy_total": 0x0156,
        "energy_import_l1": 0x015A,
        "energy_export_l3": 0x0164,
    },
    "sdm120": {
        "voltage": 0x0000,
        "current": 0x0006,
        "power": 0x000C,
        "apparent_power": 0x0012,
        "reactive_power": 0x0018,
        "power_factor": 0x001E,
        "frequency": 0x0046,
        "energy_import": 0x0048,
        "energy_export": 0x004A,
        "energy_total": 0x0156,
    },
    "sdm72": {
        "power": 0x0034,
        "energy_import": 0x0048,
        "energy_export": 0x004A,
        "energy_total": 0x0156,
        "voltage_l1": 0x0000,
        "power_l2": 0x000E,
    },
}


def _float_words(value: float) -> list[int]:
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [high, low]


@pytest.mark.parametrize(
    ("model", "channel", "address"),
    [(m, c, a) for m, table in PUBLISHED.items() for c, a in table.items()],
)
def test_channel_sits_at_the_published_address(model: str, channel: str, address: int) -> None:
    field = METER_MAPS[model].field(channel)
    assert field.address == address
    assert field.dtype is DataType.FLOAT32


@pytest.mark.parametrize("rmap", [SDM120, SDM630, SDM72], ids=lambda m: m.model)
def test_map_is_input_registers_with_canonical_names_and_units(rmap: RegisterMap) -> None:
    assert rmap.register_kind is RegisterKind.INPUT
    assert len(set(rmap.channels)) == len(rmap.channels)
    for field in rmap.fields:
        assert re.fullmatch(CHANNEL_PATTERN, field.channel)
        assert field.sf_address is None
        is_energy = field.channel.startswith(("energy", "reactive_energy"))
        assert (field.kind is ChannelKind.COUNTER) == is_energy
        if is_energy:
            assert field.scale == 1000.0  # kWh -> Wh
            assert field.unit in (Unit.WATT_HOUR, Unit.VARH)
    assert all(b.count <= rmap.max_block_words for b in rmap.blocks())


def test_three_phase_maps_have_per_phase_and_total_channels() -> None:
    for rmap in (SDM630, SDM72):
        for name in ("voltage", "current", "power"):
            assert {f"{name}_l1", f"{name}_l2", f"{name}_l3"} <= set(rmap.channels)
        assert {"power", "current", "energy_import", "energy_export"} <= set(rmap.channels)


def test_sdm630_image_decodes_to_canonical_units_and_signs() -> None:
    image = {
        address: 0
        for block in SDM630.blocks()
        for address in range(block.address, block.address + block.count)
    }
    readings = {
        0x0000: [0x4366, 0x0000],  # 230.0 V
        0x0034: _float_words(-1500.0),  # exporting 1.5 kW: negative, as on the meter
        0x0046: _float_words(50.0),
        0x0048: _float_words(1234.5),  # kWh
        0x004A: _float_words(67.25),
    }
    for address, words in readings.items():
        image[address], image[address + 1] = words
    values = decode_map(SDM630, image)
    assert values["voltage_l1"] == 230.0
    assert values["power"] == -1500.0
    assert values["frequency"] == 50.0
    assert values["energy_import"] == 1_234_500.0  # Wh
    assert values["energy_export"] == 67_250.0


def test_nan_register_reads_as_none() -> None:
    image = encode_map(SDM120, {"voltage": 231.0})
    values = decode_map(SDM120, image)
    assert values["voltage"] == 231.0
    assert values["power"] is None


def test_blocks_read_sdm630_in_few_requests() -> None:
    blocks = plan_blocks(SDM630.fields, SDM630.max_block_words)
    assert len(blocks) <= 4
    assert blocks[0].address == 0


def _value_strategy(channel: str) -> st.SearchStrategy[float]:
    if channel.startswith(("energy", "reactive_energy")):
        return st.floats(0, 1e8)
    if channel.startswith("power_factor"):
        return st.floats(-1, 1)
    return st.floats(-1e5, 1e5)


@pytest.mark.parametrize("rmap", [SDM120, SDM630, SDM72], ids=lambda m: m.model)
@settings(max_examples=30)
@given(data=st.data())
def test_encode_then_decode_round_trips(rmap: RegisterMap, data: st.DataObject) -> None:
    values = {c: data.draw(st.none() | _value_strategy(c), label=c) for c in rmap.channels}
    decoded = decode_map(rmap, encode_map(rmap, values))
    for channel, value in values.items():
        if value is None:
            assert decoded[channel] is None
        else:
            result = decoded[channel]
            assert result is not None
            assert math.isclose(result, value, rel_tol=1e-6, abs_tol=1e-30)
