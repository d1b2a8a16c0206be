"""The drain's fast paths produce exactly what the slow, validated paths would."""

from __future__ import annotations

import warnings
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.buffer import SqliteBuffer
from edge_agent.drain import pack_batch
from protocols import Quality, Reading, TelemetryBatch, Unit, decode, encode

readings_strategy = st.lists(
    st.builds(
        Reading,
        meter_id=st.sampled_from(["grid", "pv", "heat.pump-2"]),
        channel=st.sampled_from(["power", "energy_import", "voltage_l1"]),
        value=st.floats(allow_nan=False, allow_infinity=False, width=32),
        unit=st.sampled_from(list(Unit)),
        ts=st.integers(1_764_000_000_000, 1_800_000_000_000),
        quality=st.sampled_from([Quality.GOOD, Quality.SUSPECT]),
        seq=st.integers(1, 10**12),
    ),
    min_size=1,
    max_size=60,
    unique_by=lambda r: r.seq,
)


@given(readings=readings_strategy, max_bytes=st.integers(300, 6000), newest=st.booleans())
def test_packed_payload_is_byte_identical_to_the_model_encoding(
    readings: list[Reading], max_bytes: int, newest: bool
) -> None:
    packed = pack_batch("gw-1", readings, max_bytes, newest_first=newest)
    assert packed is not None
    taken = sorted((r for r in readings if r.seq in set(packed.seqs)), key=lambda r: r.seq or 0)
    assert packed.payload == encode(TelemetryBatch(gateway_id="gw-1", readings=taken))
    assert len(packed.payload) <= max_bytes or len(taken) == 1
    assert decode(TelemetryBatch, packed.payload).readings == taken


@settings(max_examples=20, deadline=None)
@given(readings=readings_strategy)
def test_buffer_rows_equal_validated_readings(tmp_path_factory: object, readings: list[Reading]
                                              ) -> None:
    path = Path(str(tmp_path_factory.mktemp("buf"))) / "b.sqlite"  # type: ignore[attr-defined]
    buffer = SqliteBuffer(path)
    buffer.open()
    seqs = buffer.append_seqs(readings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a serializer warning would mean a wrongly typed field
        rows = buffer.pending(0, 1000)
        encoded = [encode(r) for r in rows]
    buffer.close()
    expected = [r.model_copy(update={"seq": s}) for r, s in zip(readings, seqs, strict=True)]
    assert rows == [Reading.model_validate(r.model_dump()) for r in expected]
    # SQLite stores -0.0 as 0.0: equal as numbers, so compare decoded values, not bytes.
    assert [decode(Reading, e) for e in encoded] == rows
