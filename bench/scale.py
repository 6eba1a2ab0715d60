"""Scale: privpoll's votes/s with 1, 10 and 100 open polls, and with 1 and 2 sinks per poll.

The polls of a run share the run's voters and take the requests in turn. The second sink of
each role is one more ``privpoll sink ROLE --poll NAME`` process beside privpoll up's own,
in the same environment; both pull from the same durable consumer, as two replicas of a
sink Deployment would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import voting
from bench.servers import Privpoll
from privpoll.bus import naming

POLLS = (1, 10, 100)
KEPT = ("accepted_per_s", "persisted_per_s", "drain_seconds", "p50_ms", "p99_ms", "lost")


def measure(system: Privpoll, work: Path, seconds: int, voters: int) -> dict[str, Any]:
    runs = []
    for count in POLLS:
        names = [f"scale{count}-{i:03d}" for i in range(count)]
        tokens = voting.new_polls(system, names, voters)
        print(f"  {count} open poll(s)", flush=True)
        runs.append(voting.vote(system, names, tokens, work, seconds))

    name = "two-sinks"
    print("  1 open poll, 2 sinks per role", flush=True)
    try:
        for role in naming.ROLES:
            system.start_sink(role, name)
        tokens = voting.new_polls(system, [name], voters, sinks_per_role=2)
        two = voting.vote(system, [name], tokens, work, seconds)
    finally:
        system.stop_extra_sinks()
    one = {key: runs[0][key] for key in KEPT}
    return {
        "polls": runs,
        "sinks": [
            {"sinks_per_poll": 1, "run": "the 1-poll run above", **one},
            {"sinks_per_poll": 2, **two},
        ],
    }
