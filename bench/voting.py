"""privpoll under load: votes answered 202, and the same votes stored end to end.

Every run votes into freshly created polls (created before the clock starts), every voter
once; then the bench closes the polls, so the sinks write what they hold for mixing, and
waits until both sinks have committed and acked every envelope. It then waits for the
re-mixer to rewrite and vacuum the polls, so that no run pays for the one before it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.load import CONNECTIONS, round_robin, write_bodies, wrk
from bench.servers import Privpoll
from privpoll.core.spec import MAX_VOTERS

# Voters per run: enough that none votes twice even at the ceiling's rate.
HEADROOM = 1.25


def voters_for(rate: float, seconds: float) -> int:
    return math.ceil(rate * seconds * HEADROOM) + 1000


def new_polls(
    system: Privpoll, names: Sequence[str], voters: int, *, sinks_per_role: int = 1
) -> list[dict[str, str]]:
    """Polls sharing ``voters`` voters between them, with their sinks pulling; each poll's
    tokens."""
    # A poll lists at most MAX_VOTERS (1,000,000): a 10 s run into one poll faster than
    # 100,000 votes/s runs out of voters, and wrk starts over (409s; see "voters_reused").
    each = min(math.ceil(voters / len(names)), MAX_VOTERS)
    tokens = [system.poll(name, each) for name in names]
    if not system.wait_sinks_ready(names, sinks_per_role):
        print(f"  warning: not every sink pulls from {names[0]}... yet; measuring anyway")
    return tokens


def vote(
    system: Privpoll,
    names: Sequence[str],
    tokens: Sequence[dict[str, str]],
    work: Path,
    seconds: int,
    *,
    connections: int = CONNECTIONS,
    rate: float = 0,
) -> dict[str, Any]:
    """One wrk run over the polls (requests round-robin over them), then the drain."""
    bodies = write_bodies(work / f"{names[0]}.tsv", round_robin(tokens, names))
    found = wrk(system.url, bodies, seconds, connections, rate, groups=system.groups)
    # wrk stops sending at the end of its duration: the last 202 came just before it exited.
    ended = time.monotonic()
    started = ended - found["seconds"]
    system.close(names)
    drained = system.wait_drained(names)
    accepted = found["statuses"].get("202", 0)
    stored = system.stored(names)
    voters = sum(len(t) for t in tokens)
    found.update(
        polls=len(names),
        voters=voters,
        voters_reused=found["requests"] > voters,
        accepted=accepted,
        # Votes still in flight when wrk stopped may be stored without wrk seeing their 202.
        stored=stored,
        lost=max(accepted - stored, 0),
        persisted_per_s=round(stored / (drained - started), 1),
        drain_seconds=round(drained - ended, 2),
    )
    settling = time.monotonic()
    found["settled"] = system.wait_settled(names)
    found["settle_seconds"] = round(time.monotonic() - settling, 1)
    return found
