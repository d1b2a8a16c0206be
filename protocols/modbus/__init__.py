"""Modbus register maps and decoders (Eastron SDM, SunSpec). Pure: words in, values out.

A reader plans its requests with :func:`plan_blocks` (or ``RegisterMap.blocks()``), collects
the words into an image ``{address: word}`` and calls :func:`decode_map`; the simulator goes
the other way with :func:`encode_map`. Markers ("not implemented") decode to ``None``.
"""

from collections.abc import Mapping
from types import MappingProxyType

from protocols.modbus.decode import (
    choose_scale_factors,
    decode_field,
    decode_map,
    decode_words,
    encode_map,
    encode_value,
)
from protocols.modbus.eastron import SDM72, SDM120, SDM630
from protocols.modbus.registers import (
    Block,
    ChannelKind,
    DataType,
    Field,
    RegisterKind,
    RegisterMap,
    plan_blocks,
)
from protocols.modbus.sunspec import (
    INVERTER_MODELS,
    METER_MODELS,
    SCAN_BASES,
    SUNS_MARKER,
    SUPPORTED_MODELS,
    DeviceInfo,
    ModelHeader,
    build_image,
    decode_common,
    encode_common,
    encode_model_body,
    is_sunspec_marker,
    model_length,
    model_register_map,
    next_model_address,
    parse_model_header,
    walk_models,
)

METER_MAPS: Mapping[str, RegisterMap] = MappingProxyType(
    {"sdm120": SDM120, "sdm630": SDM630, "sdm72": SDM72}
)

__all__ = [
    "INVERTER_MODELS",
    "METER_MAPS",
    "METER_MODELS",
    "SCAN_BASES",
    "SDM72",
    "SDM120",
    "SDM630",
    "SUNS_MARKER",
    "SUPPORTED_MODELS",
    "Block",
    "ChannelKind",
    "DataType",
    "DeviceInfo",
    "Field",
    "ModelHeader",
    "RegisterKind",
    "RegisterMap",
    "build_image",
    "choose_scale_factors",
    "decode_common",
    "decode_field",
    "decode_map",
    "decode_words",
    "encode_common",
    "encode_map",
    "encode_model_body",
    "encode_value",
    "is_sunspec_marker",
    "model_length",
    "model_register_map",
    "next_model_address",
    "parse_model_header",
    "plan_blocks",
    "walk_models",
]
