"""A sink's metrics: batch sizes, rows written and lag, served on its own port when asked.

A sink is a process of its own (one per role, per poll on Kubernetes), so it serves its own
``/metrics`` on ``PRIVPOLL_SINK_METRICS_ADDR`` (``host:port``; unset: none). Labels name the
role only: nothing names a poll's voter or choice, and a batch is counted as a whole.

Lag comes from JetStream's own bookkeeping, which every delivered message carries in its ack
subject (``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<published ns>
.<pending>``, with two more tokens ahead of the stream in the domain form): how long the
oldest envelope of a batch waited from its publication to the batch's commit, and how many
envelopes the consumer had not been delivered yet.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from privpoll.bus.wire import Delivery

BATCH_ENVELOPES = Histogram(
    "privpoll_sink_batch_envelopes",
    "Envelopes per batch a sink committed",
    ["role"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
ROWS = Counter("privpoll_sink_rows", "Rows a sink committed", ["role"])
LAG = Histogram(
    "privpoll_sink_lag_seconds",
    "Seconds from the publication of a batch's oldest envelope to the batch's commit",
    ["role"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
PENDING = Gauge(
    "privpoll_sink_pending_envelopes",
    "Envelopes of the stream not yet delivered to this sink, as of its last batch",
    ["role"],
)


def serve(addr: str) -> None:
    """Serve this process's metrics on ``host:port`` in a background thread."""
    host, _, port = addr.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")  # noqa: S104 (a pod's own port)


def _published_and_pending(reply: bytes) -> tuple[float, int] | None:
    tokens = reply.split(b".")
    if len(tokens) == 9:
        published, pending = tokens[7], tokens[8]
    elif len(tokens) >= 12:
        published, pending = tokens[9], tokens[10]
    else:
        return None
    try:
        return int(published) / 1e9, int(pending)
    except ValueError:
        return None


def committed(role: str, messages: Sequence[Delivery], rows: int) -> None:
    """A batch of ``messages`` (``rows`` rows) is committed: count it."""
    BATCH_ENVELOPES.labels(role=role).observe(len(messages))
    ROWS.labels(role=role).inc(rows)
    read = [found for msg in messages if (found := _published_and_pending(msg.reply))]
    if read:
        LAG.labels(role=role).observe(max(time.time() - min(p for p, _ in read), 0.0))
        PENDING.labels(role=role).set(read[-1][1])
