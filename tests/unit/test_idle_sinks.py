"""The idle scaler's rule (privpoll_operator.idle): zero when nothing moves, one when work waits."""

from __future__ import annotations

from privpoll.bus.activity import ConsumerActivity
from privpoll_operator.idle import Seen, step


def consumer(
    pending: int = 0, held: int = 0, mark: tuple[int, int, int] = (5, 5, 5)
) -> ConsumerActivity:
    return ConsumerActivity(pending=pending, held=held, mark=mark)


def run(views: list[tuple[float, ConsumerActivity]], *, open_poll: bool = True) -> list[int | None]:
    seen: Seen | None = None
    done = []
    for now, view in views:
        seen, replicas = step(seen, now, view, open_poll=open_poll, idle_after=60)
        done.append(replicas)
    return done


def test_a_consumer_with_nothing_new_goes_to_zero_once() -> None:
    quiet = consumer()
    assert run([(0, quiet), (30, quiet), (61, quiet), (90, quiet)]) == [None, None, 0, None]


def test_held_back_envelopes_do_not_keep_a_sink_of_an_open_poll_up() -> None:
    holding = consumer(held=10)
    assert run([(0, holding), (61, holding)]) == [None, 0]


def test_a_new_envelope_brings_the_sink_back_and_resets_the_clock() -> None:
    quiet = consumer()
    arrived = consumer(pending=1, mark=(6, 5, 5))
    taken = consumer(mark=(6, 6, 6))
    found = run([(0, quiet), (61, quiet), (70, arrived), (73, taken), (120, taken), (134, taken)])
    assert found == [None, 0, 1, None, None, 0]


def test_a_closed_poll_with_held_envelopes_gets_its_sink_back() -> None:
    holding = consumer(held=10)
    assert run([(0, holding), (61, holding)], open_poll=False) == [1, None]


def test_activity_keeps_a_sink_up() -> None:
    views = [(float(t), consumer(mark=(t, t, t))) for t in range(0, 200, 20)]
    assert run(views) == [None] * len(views)
