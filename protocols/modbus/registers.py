"""Table-driven register maps: the data that says where each channel lives in a device.

Adding a meter model means adding a :class:`RegisterMap` (data), not code. Decoding lives in
``protocols.modbus.decode``; block planning (few requests per poll) in :func:`plan_blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocols.models import Unit


class RegisterKind(StrEnum):
    INPUT = "input"  # FC4, read-only measurements (Eastron)
    HOLDING = "holding"  # FC3, SunSpec and writable setpoints


class DataType(StrEnum):
    FLOAT32 = "float32"  # IEEE 754, high word first
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    ACC32 = "acc32"  # SunSpec accumulator: 0 means "not implemented"
    SF = "sunssf"  # SunSpec scale factor (int16 power of ten; -32768 not implemented)

    @property
    def words(self) -> int:
        return 1 if self in (DataType.INT16, DataType.UINT16, DataType.SF) else 2


class ChannelKind(StrEnum):
    INSTANT = "instant"  # power, voltage...: any value allowed
    COUNTER = "counter"  # energy: monotonic, checked by the reader


@dataclass(frozen=True)
class Field:
    """One channel: where it is and how to turn its words into the canonical unit.

    ``scale`` converts the device's unit to ``unit`` (kWh -> Wh is 1000); ``sign`` applies our
    sign convention (grid: + import / - export; PV: + production). ``sf_address`` is the
    absolute address of a SunSpec scale-factor register (one ``sunssf`` word): the raw value
    is multiplied by ``10 ** sf`` before ``scale`` and ``sign``. The reader must read it too;
    :func:`plan_blocks` covers it.
    """

    channel: str
    address: int
    dtype: DataType
    unit: Unit
    scale: float = 1.0
    sign: int = 1
    kind: ChannelKind = ChannelKind.INSTANT
    sf_address: int | None = None


@dataclass(frozen=True)
class RegisterMap:
    model: str
    register_kind: RegisterKind
    fields: tuple[Field, ...]
    max_block_words: int = 80  # Eastron SDM answers at most 80 registers per request

    def field(self, channel: str) -> Field:
        """The field of ``channel``; ``KeyError`` when the map has no such channel."""
        for candidate in self.fields:
            if candidate.channel == channel:
                return candidate
        raise KeyError(channel)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(f.channel for f in self.fields)

    def blocks(self, max_gap_words: int = 8) -> list[Block]:
        """The read requests that cover every field and scale factor of this map."""
        return plan_blocks(self.fields, self.max_block_words, max_gap_words)


@dataclass(frozen=True)
class Block:
    """One read request: ``count`` registers starting at ``address``."""

    address: int
    count: int


def plan_blocks(
    fields: tuple[Field, ...], max_block_words: int, max_gap_words: int = 8
) -> list[Block]:
    """Cover every field with as few requests as the device allows.

    Neighbouring fields share a request when the hole between them is at most ``max_gap_words``
    (reading a few unused registers is cheaper than another round trip on RS485). A field's
    scale-factor register (``sf_address``) is covered too, so the image read with these blocks
    is all :func:`protocols.modbus.decode.decode_map` needs. No field is split across blocks.
    """
    spans = {(f.address, f.dtype.words) for f in fields}
    spans |= {(f.sf_address, 1) for f in fields if f.sf_address is not None}
    blocks: list[Block] = []
    for address, words in sorted(spans):
        end = address + words
        if blocks:
            last = blocks[-1]
            last_end = last.address + last.count
            if address - last_end <= max_gap_words and end - last.address <= max_block_words:
                blocks[-1] = Block(last.address, max(last_end, end) - last.address)
                continue
        blocks.append(Block(address, words))
    return blocks
