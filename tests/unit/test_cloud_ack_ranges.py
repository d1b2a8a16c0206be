"""Stored seqs are acked as few, exact, inclusive ranges."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from cloud_sync.ack_ranges import compact


def as_pairs(seqs: list[int]) -> list[tuple[int, int]]:
    return [(r.first, r.last) for r in compact(seqs)]


def test_contiguous_seqs_become_one_range() -> None:
    assert as_pairs([1, 2, 3, 4]) == [(1, 4)]


def test_gaps_split_ranges_and_order_and_duplicates_do_not_matter() -> None:
    assert as_pairs([7, 5, 1, 2, 3, 3, 6, 10]) == [(1, 3), (5, 7), (10, 10)]


def test_no_seqs_gives_no_ranges() -> None:
    assert compact([]) == []


@given(st.lists(st.integers(min_value=1, max_value=500), max_size=200))
def test_ranges_cover_exactly_the_input_and_never_touch(seqs: list[int]) -> None:
    pairs = as_pairs(seqs)
    covered = {s for first, last in pairs for s in range(first, last + 1)}
    assert covered == set(seqs)
    for (_, last), (first, _) in itertools.pairwise(pairs):
        assert first > last + 1
