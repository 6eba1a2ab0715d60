"""The re-mixer worker: every closed poll is re-mixed once the sinks drained it, then purged.

``privpoll up`` runs one as a child process beside the sinks (see ``privpoll.local.runner``):
on its own it can wait for a drain, hold a database connection and run long vacuums without
slowing the sinks or the ingest, and it is restarted like them if it dies. On Kubernetes the
operator's timer takes this part (``privpoll_operator.handlers.follow``); both call
``privpoll.service.lifecycle.advance``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg

from privpoll.bus import naming
from privpoll.bus.topology import JetStream
from privpoll.db import remix, storage
from privpoll.service import lifecycle

log = logging.getLogger(__name__)

WATCH_EVERY = 2.0


class Watcher:
    """Looks at every poll every WATCH_EVERY seconds and moves each closed one on."""

    def __init__(self, nats_url: str, dsn: str, *, replicas: int = 1) -> None:
        self.nats_url = nats_url
        self.dsn = dsn
        self.replicas = replicas
        self._conn: psycopg.Connection[Any] | None = None

    async def run(self) -> None:
        nc = await naming.until_reached(
            lambda: naming.connect(self.nats_url, "privpoll-remixer"), self.nats_url
        )
        js = nc.jetstream()
        while True:
            try:
                await self.round(js)
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                log.warning("database unavailable (%s); retrying", type(error).__name__)
                self._close()
            # Anything else (NATS errors of many kinds among them) fails this round only:
            # the next one starts from what the database and the stream say then.
            except Exception as error:
                log.warning("remix round failed (%s); retrying", type(error).__name__)
            await asyncio.sleep(WATCH_EVERY)

    async def round(self, js: JetStream) -> None:
        conn = self._connection()
        polls = await asyncio.to_thread(storage.list_polls, conn)
        states = await asyncio.to_thread(remix.progress, conn)
        waiting = False
        for poll in polls:
            if states.get(poll.name, (False, False))[1]:
                continue  # purged: nothing left to do
            done = await lifecycle.advance(js, conn, poll, replicas=self.replicas, purge_now=False)
            if done is not None and done.message:
                log.info("%s", done.message)
            waiting = waiting or (done is not None and done.remixed and not done.purged)
        # One purge for every poll re-mixed this round or waiting from an earlier one: it
        # rewrites the vote tables whole, whatever the number of polls.
        if waiting:
            await lifecycle.purge(js, conn)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = storage.connect(self.dsn)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            # Closing a connection that already died raises; it is gone either way.
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None
