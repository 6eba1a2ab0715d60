"""Where the CPU goes during a load run: CPU microseconds per answered request, by process.

Two cores serve everything here (wrk, the web server, NATS, PostgreSQL, the sinks), so a
server's rate is bounded by its CPU cost per request summed over every process it keeps
busy. This split is the profile behind the ratios: it shows which part costs what.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import psutil

# Process groups: name -> the pids in it, looked up when the run starts and when it ends.
Groups = Callable[[], Mapping[str, list[int]]]


def _seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _children_seconds() -> float:
    """CPU of this process's finished children: wrk, which has exited when a run ends."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


@contextmanager
def split(groups: Groups, into: dict[str, float]) -> Iterator[None]:
    """Fill ``into`` with the CPU seconds each group (and wrk) used inside the block."""
    before = {name: {pid: _seconds(pid) for pid in pids} for name, pids in groups().items()}
    children = _children_seconds()
    yield
    into["wrk"] = _children_seconds() - children
    for name, pids in groups().items():
        seen = before.get(name, {})
        # A process that started during the run counts from zero.
        into[name] = sum(_seconds(pid) - seen.get(pid, 0.0) for pid in pids)


def per_request(seconds: Mapping[str, float], requests: int) -> dict[str, float]:
    """CPU microseconds per request of each group, and their total."""
    shares = {name: round(used / max(requests, 1) * 1e6, 1) for name, used in seconds.items()}
    shares["total"] = round(sum(shares.values()), 1)
    return shares


def tree(pid: int) -> list[int]:
    """A process and its descendants (gunicorn's master and workers, PostgreSQL's backends)."""
    try:
        root = psutil.Process(pid)
        return [root.pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return []
