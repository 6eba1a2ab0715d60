"""An event loop on a thread of its own, to which other threads hand coroutines and wait.

The ingest's Flask request threads (greenlets under gevent) share one NATS connection this
way: work handed over while the loop is busy waits in one inbox, and the loop takes it all in
one wake-up, so under load one wake-up (and one socket write) serves many votes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Abandoned(Exception):
    """The loop did not answer in time, or the work was cancelled."""


class _Answer(Generic[T]):
    """Where the loop leaves a request thread's result: a lock the thread waits on, released
    once the result is there (lighter than ``concurrent.futures.Future``, whose condition
    variable costs the loop a second lock and a list of waiters for every vote)."""

    __slots__ = ("abandoned", "error", "ready", "value")

    def __init__(self) -> None:
        self.ready = threading.Lock()
        self.ready.acquire()
        self.value: T | None = None
        self.error: BaseException | None = None
        self.abandoned = False

    def settle(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self.error = Abandoned("cancelled")
        elif (error := task.exception()) is not None:
            self.error = error
        else:
            self.value = task.result()
        self.ready.release()


class LoopThread:
    def __init__(self, name: str, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start the loop on its thread, with ``start()`` its first task."""
        self.loop = asyncio.new_event_loop()
        self._start = start
        self._inbox: list[tuple[Coroutine[Any, Any, Any], _Answer[Any]]] = []
        self._inbox_lock = threading.Lock()
        self._background_tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.create_task(self._start())
        self.loop.run_forever()

    def call(self, work: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run a coroutine on the loop and wait for its result (Abandoned after ``timeout``)."""
        answer: _Answer[T] = _Answer()
        with self._inbox_lock:
            self._inbox.append((work, answer))
            wake = len(self._inbox) == 1
        if wake:
            self.loop.call_soon_threadsafe(self._take_inbox)
        if not answer.ready.acquire(timeout=timeout):
            # Not started yet: it never will be. Started: its result is dropped.
            answer.abandoned = True
            raise Abandoned("the loop did not answer in time")
        if answer.error is not None:
            raise answer.error
        return answer.value  # type: ignore[return-value]  # T, set by settle

    def _take_inbox(self) -> None:
        with self._inbox_lock:
            taken, self._inbox = self._inbox, []
        for work, answer in taken:
            if answer.abandoned:
                work.close()
                continue
            self.loop.create_task(work).add_done_callback(answer.settle)

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` on the loop (from the loop's own thread) without waiting for it,
        holding on to it until it ends."""
        task = self.loop.create_task(work)
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)
