"""Compaction of stored sequence numbers into the inclusive ranges a ``TelemetryAck`` names."""

from __future__ import annotations

from collections.abc import Iterable

from protocols import SeqRange


def compact(seqs: Iterable[int]) -> list[SeqRange]:
    """Sorted, merged, inclusive ranges covering exactly ``seqs`` (duplicates allowed).

    ``[5, 1, 2, 3, 3, 7, 6]`` becomes ``[1..3, 5..7]``. An empty input gives an empty list;
    callers must not publish an ack with no ranges (the wire contract forbids it).
    """
    ranges: list[SeqRange] = []
    first = last = None
    for seq in sorted(set(seqs)):
        if last is not None and seq == last + 1:
            last = seq
            continue
        if first is not None and last is not None:
            ranges.append(SeqRange(first=first, last=last))
        first = last = seq
    if first is not None and last is not None:
        ranges.append(SeqRange(first=first, last=last))
    return ranges
