"""The sinks' mixing rule: while the poll is open nothing is written before it can hide in
``minBatch`` others, and the newest ``minBatch`` envelopes are always held back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from privpoll.core.spec import Mixing
from privpoll.workers.mixing import MixingRule

rules = st.builds(
    MixingRule,
    min_batch=st.integers(1, 500),
    max_wait=st.floats(0.1, 60),
    capacity=st.integers(1000, 5000),
)


def run(rule: MixingRule, arrivals: list[int], *, draw: float = 0.5) -> tuple[list[int], int]:
    """A sink that receives ``arrivals[i]`` envelopes at second i while the poll is open, then
    the poll closes and drains: the size of every batch written, and what is left."""
    held, ready_at, written = 0, None, []
    now = 0.0
    for count in arrivals:
        held += count
        if ready_at is None:
            ready_at = rule.ready_at(held, now, draw)
        if rule.due(held, ready_at, now, drained=False):
            write = rule.to_write(held, drained=False)
            written.append(write)
            held -= write
            ready_at = rule.ready_at(held, now, draw)
        now += 1.0
    if rule.due(held, ready_at, now, drained=True):
        written.append(rule.to_write(held, drained=True))
        held -= written[-1]
    return written, held


@given(rules, st.lists(st.integers(0, 700), max_size=60))
def test_every_batch_hides_each_voter_among_min_batch(
    rule: MixingRule, arrivals: list[int]
) -> None:
    written, left = run(rule, arrivals)
    assert left == 0, "a drained poll leaves nothing unwritten"
    total = sum(arrivals)
    if total >= rule.min_batch:
        assert all(size >= rule.min_batch for size in written), written
    else:
        assert written in ([], [total]), "a poll of fewer voters is written once, at the end"


@given(rules, st.integers(0, 20_000))
def test_while_open_the_newest_min_batch_are_held_back(rule: MixingRule, held: int) -> None:
    write = rule.to_write(held, drained=False)
    assert held - write == min(held, rule.min_batch)


def test_nothing_is_due_before_twice_min_batch() -> None:
    rule = MixingRule(min_batch=10, max_wait=30.0, capacity=5000)
    assert rule.ready_at(19, now=0.0, draw=0.0) is None
    assert not rule.due(19, None, now=1e9, drained=False)
    assert rule.due(19, None, now=0.0, drained=True), "once drained, whatever is left goes"


def test_a_ready_batch_waits_a_jittered_share_of_max_wait() -> None:
    rule = MixingRule(min_batch=10, max_wait=40.0, capacity=5000)
    assert rule.ready_at(20, now=100.0, draw=0.0) == 110.0
    ready = rule.ready_at(20, now=100.0, draw=0.999)
    assert ready is not None
    assert 139.0 < ready < 140.0
    assert not rule.due(20, 110.0, now=109.9, drained=False)
    assert rule.due(20, 110.0, now=110.0, drained=False)


def test_a_full_batch_is_written_at_once_but_still_holds_min_batch_back() -> None:
    rule = MixingRule(min_batch=10, max_wait=30.0, capacity=100)
    assert rule.due(100, ready_at=1e9, now=0.0, drained=False)
    assert rule.to_write(100, drained=False) == 90


def test_the_rule_of_a_poll_holds_at_least_twice_its_min_batch() -> None:
    rule = MixingRule.of(Mixing(min_batch=4000, max_wait="10s"))
    assert rule.capacity == 8000
    assert rule.min_batch == 4000
    assert rule.max_wait == 10.0
