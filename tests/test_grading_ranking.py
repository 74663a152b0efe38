"""The 2019 ranking on hand-computed examples (ranks worked out in the comments)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.grading.ranking import Entry, mean_ranks, rank_board, select_best_per_participant, value_ranks


def E(name, values, participant=None, order=None):
    return Entry(name=name, participant=participant or name, order=order if order is not None else ord(name[0]),
                 values=tuple(values))


def test_ties_share_the_best_rank_and_mean_rank_orders_the_board():
    # m1: A 0.9, B 0.9, C 0.8 -> A 1, B 1, C 3  (1 + number strictly better)
    # m2: A 0.5, B 0.7, C 0.7 -> A 3, B 1, C 1
    # mean ranks: A 2, B 1, C 2; A and C tie at position 2, A (earlier) listed first
    entries = [E("A", [0.9, 0.5], order=0), E("B", [0.9, 0.7], order=1), E("C", [0.8, 0.7], order=2)]
    assert value_ranks(entries, [True, True]) == [[1, 3], [1, 1], [3, 1]]
    assert mean_ranks(entries, [True, True]) == [2.0, 1.0, 2.0]
    board = rank_board(entries, [True, True])
    assert [(p.entry.name, p.position, p.mean_rank) for p in board] == [("B", 1, 1.0), ("A", 2, 2.0), ("C", 2, 2.0)]


def test_tie_goes_to_the_earlier_submission():
    later_first = [E("X", [0.5, 0.5], order=5), E("Y", [0.5, 0.5], order=3)]
    board = rank_board(later_first, [True, True])
    assert [p.entry.name for p in board] == ["Y", "X"]
    assert [p.position for p in board] == [1, 1]
    # the same entries from one participant: the earlier one is chosen
    same = [E("X", [0.5, 0.5], participant="p", order=5), E("Y", [0.5, 0.5], participant="p", order=3)]
    assert [e.name for e in select_best_per_participant(same, [True, True])] == ["Y"]


def test_lower_is_better_columns():
    # m1 higher better: A 1, B 2; m2 lower better (A 3.0 > B 1.0): A 2, B 1 -> both 1.5
    entries = [E("A", [0.9, 3.0], order=0), E("B", [0.8, 1.0], order=1)]
    assert value_ranks(entries, [True, False]) == [[1, 2], [2, 1]]


def test_greedy_best_per_participant_differs_from_one_global_ranking():
    # Four values; participant P has P1, P2; participant Q has Q1, Q2.
    #          m1 m2 m3 m4
    # P1        5  1  2  4
    # P2        3  5  2  0
    # Q1        5  1  0  5
    # Q2        4  5  2  1
    # All four: m1 P1 1, Q1 1, Q2 3, P2 4 | m2 P2 1, Q2 1, P1 3, Q1 3 | m3 P1 1, P2 1, Q2 1, Q1 4
    #           m4 Q1 1, P1 2, Q2 3, P2 4  -> sums P1 7, P2 10, Q1 9, Q2 8:
    # one global ranking would pick Q2 for Q. Greedy: P1 is best; drop P2 and rank again:
    #           m1 P1 1, Q1 1, Q2 3 | m2 Q2 1, P1 2, Q1 2 | m3 P1 1, Q2 1, Q1 3 | m4 Q1 1, P1 2, Q2 3
    #           -> sums P1 6, Q1 7, Q2 8: Q1 is Q's entry.
    # Board (P1, Q1): m1 1,1 | m2 1,1 | m3 1,2 | m4 2,1 -> both 1.25, shared position 1, P1 earlier.
    entries = [E("P1", [5, 1, 2, 4], "P", 0), E("P2", [3, 5, 2, 0], "P", 1),
               E("Q1", [5, 1, 0, 5], "Q", 2), E("Q2", [4, 5, 2, 1], "Q", 3)]
    up = [True] * 4
    assert [sum(r) for r in value_ranks(entries, up)] == [7, 10, 9, 8]
    assert [e.name for e in select_best_per_participant(entries, up)] == ["P1", "Q1"]
    board = rank_board(entries, up)
    assert [(p.entry.name, p.position, p.mean_rank, p.ranks) for p in board] == [
        ("P1", 1, 1.25, (1, 1, 1, 2)), ("Q1", 1, 1.25, (1, 1, 2, 1))]


def test_three_participants_each_placed_once():
    # R has the single best entry and a weak one; S and T one each.
    # R1 (3,3) R2 (0,0) S (2,1) T (1,2): all: m1 R1 1, S 2, T 3, R2 4 | m2 R1 1, T 2, S 3, R2 4
    # greedy: R1 (2); drop R2; S and T tie at 5 -> S earlier. Board: R1 1, S 2, T 2.
    entries = [E("R1", [3, 3], "R", 0), E("R2", [0, 0], "R", 1), E("S", [2, 1], "S", 2), E("T", [1, 2], "T", 3)]
    board = rank_board(entries, [True, True])
    assert [(p.entry.name, p.position) for p in board] == [("R1", 1), ("S", 2), ("T", 2)]


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_non_finite_values_never_rank(bad):
    with pytest.raises(ValueError, match="never rank"):
        value_ranks([E("A", [0.5, bad])], [True, True])


def test_empty_board():
    assert rank_board([], [True]) == []

_entries = st.lists(
    st.tuples(st.sampled_from("PQRS"), st.lists(st.integers(0, 4), min_size=3, max_size=3)),
    min_size=1, max_size=9,
)


@settings(max_examples=150, deadline=None)
@given(_entries, st.randoms(use_true_random=False))
def test_board_properties(raw, rnd):
    entries = [E(f"e{i}", values, participant=p, order=i) for i, (p, values) in enumerate(raw)]
    up = [True, True, False]
    board = rank_board(entries, up)
    # one entry per participant, every participant placed
    assert sorted(p.entry.participant for p in board) == sorted({e.participant for e in entries})
    # the input order does not matter (submission order is in the entries)
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert [p.entry.name for p in rank_board(shuffled, up)] == [p.entry.name for p in board]
    # positions: 1 + number of board entries with a strictly lower mean rank; listed best first
    for p in board:
        assert p.position == 1 + sum(q.mean_rank < p.mean_rank for q in board)
    assert [p.mean_rank for p in board] == sorted(p.mean_rank for p in board)
    # an entry that another board entry beats or ties on every value, strictly on one, is below it
    for a in board:
        for b in board:
            better_or_equal = all((x >= y) if h else (x <= y) for x, y, h in zip(a.entry.values, b.entry.values, up))
            if better_or_equal and a.entry.values != b.entry.values:
                assert a.mean_rank < b.mean_rank
