"""``/metrics``: the ingest's counters and histograms, by ``prometheus_client``.

gunicorn runs the ingest in several worker processes. With ``PROMETHEUS_MULTIPROC_DIR`` set
(``privpoll.web.gunicorn_conf`` sets it, a fresh folder at each server start), every worker writes
its values to files there and a scrape sums the files of all workers, the dead ones' included:
counters never go back between scrapes, whichever worker answers. Without it (Flask's test
client, one process) the process's own values are served.

Labels are error codes and HTTP statuses only: nothing names a voter, a token or a choice.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

API_ERRORS = Counter(
    "privpoll_api_errors", "Requests answered with an API error, by its code", ["code"]
)
VOTES_ACCEPTED = Counter(
    "privpoll_votes_accepted",
    "Votes queued durably: answered 202 by the API, or sent on to the thank-you page",
)
VOTE_SECONDS = Histogram(
    "privpoll_vote_seconds",
    "Time to answer POST /api/v1/polls/<name>/votes, by HTTP status",
    ["status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
_COUNTERS = {
    "privpoll_api_errors_total": API_ERRORS,
    "privpoll_votes_accepted_total": VOTES_ACCEPTED,
}


class Metrics:
    """What the ingest's code counts, by the name the scrape shows."""

    def count(self, name: str, amount: int = 1, **labels: str) -> None:
        counter = _COUNTERS[name]
        (counter.labels(**labels) if labels else counter).inc(amount)

    def vote_answered(self, status: int, seconds: float) -> None:
        VOTE_SECONDS.labels(status=str(status)).observe(seconds)

    def render(self) -> str:
        """The exposition text of every worker's values summed (or this process's)."""
        if os.environ.get(MULTIPROC_DIR):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry).decode()
        return generate_latest(REGISTRY).decode()
