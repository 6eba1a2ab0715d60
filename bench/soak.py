"""``make soak``: privpoll under steady load for ten minutes; nothing may leak, nothing be lost.

Votes arrive at half the rate ``make bench`` measured (its newest bench/results/*.json), or
at --rate, or at DEFAULT_RATE when there is no benchmark yet. Every minute a new poll opens
and the previous one closes, so the sinks, the re-mixer and the ingest's caches all turn
over. The polls are in ``detect`` mode: in ``prevent`` mode NATS keeps one reservation per
vote for as long as the poll exists, memory that grows with the data by design, and this
run is after leaks, not data. Every few seconds the private memory (USS) of every process
is sampled: privpoll up and its children, nats-server, and every PostgreSQL process. At the
end:

- memory: each process that lived through the run ends within 10% of where it stood once
  warmed up: the highest sample of the last minute against the highest of the minute after
  warm-up (a third of the run, 200 s of ten minutes: NATS fills its deduplication windows,
  the first polls close and are re-mixed). Peaks, not averages: a re-mix or a list of
  50,000 invitation links makes a sawtooth, and a leak lifts the peaks. Growth under 1 MB
  is noise and passes;
- votes: every vote answered 202 is stored, once; nothing else is; no answer was a 5xx.

The figures go to bench/results/soak-<time>.json. Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from bench.run import HERE
from bench.servers import Privpoll
from privpoll.local.embedded import NatsServer, PostgresServer

DEFAULT_RATE = 100.0
CHOICES = ["pizza", "sushi", "tacos"]
SAMPLE_EVERY = 5.0
GROWTH = 0.10
NOISE_MB = 1.0


def benchmarked_rate() -> tuple[float, str]:
    """Half the newest benchmark's saturated rate, or the default and why."""
    found = sorted((HERE / "results").glob("2*.json"))
    if not found:
        return DEFAULT_RATE, f"no benchmark in bench/results: the default {DEFAULT_RATE}/s"
    result = json.loads(found[-1].read_text())
    rate = float(result["results"]["privpoll"]["accepted_per_s"])
    return rate / 2, f"half of {rate}/s measured by make bench ({found[-1].name})"


@dataclass
class Load:
    """Votes at a fixed rate over keep-alive connections; each answer recorded per voter.

    The client is asyncio writing HTTP/1.1 by hand (every request is a vote, every answer
    a status line, a few headers and a short body with its Content-Length): it runs on the
    same two cores as the system it loads, and httpx in 16 threads took most of one core at
    800 votes/s, more than the ingest's workers, so that the load, not privpoll, set the
    rate. A vote whose connection broke is recorded with the error's name, never retried.
    """

    url: str
    rate: float
    connections: int = 48
    timeout: float = 30.0
    answers: dict[tuple[str, str], list[int | str]] = field(default_factory=dict)

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def run(self, poll: str, tokens: dict[str, str], seconds: float) -> None:
        """Vote in ``poll`` for ``seconds`` at the rate, one voter after another; returns
        once every vote of the round is answered (before the poll closes)."""
        asyncio.run(self._run(poll, tokens, seconds))

    async def _run(self, poll: str, tokens: dict[str, str], seconds: float) -> None:
        loop = asyncio.get_running_loop()
        work: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        clients = [asyncio.create_task(self._client(poll, work)) for _ in range(self.connections)]
        voters = iter(sorted(tokens))
        start = loop.time()
        sent = 0
        while (now := loop.time()) - start < seconds:
            due = int((now - start) * self.rate)
            while sent < due:
                voter = next(voters)
                work.put_nowait((voter, tokens[voter]))
                sent += 1
            await asyncio.sleep(0.005)
        for _ in clients:
            work.put_nowait(None)
        await asyncio.gather(*clients)

    async def _client(self, poll: str, work: asyncio.Queue[tuple[str, str] | None]) -> None:
        address = urlsplit(self.url)
        host, port = address.hostname or "127.0.0.1", address.port or 80
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while (item := await work.get()) is not None:
                voter, token = item
                status: int | str
                try:
                    if streams is None:
                        streams = await asyncio.wait_for(
                            asyncio.open_connection(host, port), self.timeout
                        )
                    status, keep = await asyncio.wait_for(
                        self._vote(*streams, host, poll, voter, token), self.timeout
                    )
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
                    status, keep = type(error).__name__, False
                if not keep and streams is not None:
                    streams[1].close()
                    streams = None
                self.answers.setdefault((poll, voter), []).append(status)
        finally:
            if streams is not None:
                streams[1].close()

    @staticmethod
    async def _vote(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        poll: str,
        voter: str,
        token: str,
    ) -> tuple[int, bool]:
        """POST one vote; its status, and whether the connection stays open."""
        choice = CHOICES[hash(voter) % len(CHOICES)]
        body = json.dumps({"voter": voter, "token": token, "choice": choice}).encode()
        writer.write(
            b"POST /api/v1/polls/%s/votes HTTP/1.1\r\nHost: %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (poll.encode(), host.encode(), len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].split(b"\r\n")
        status = int(status_line.split()[1])
        length, keep = 0, True
        for line in lines:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
        await reader.readexactly(length)
        return status, keep

    def acknowledged(self, poll: str) -> set[str]:
        return {v for (p, v), seen in self.answers.items() if p == poll and 202 in seen}


def program(argv: list[str]) -> str:
    """A process's first words, its program by name only: no path of the machine it ran on."""
    words = argv[:4]
    if words and "/" in words[0]:
        words[0] = Path(words[0]).name
    return " ".join(words)


class Memory:
    """USS of every process of the system, sampled in the background."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.samples: dict[tuple[int, float], list[tuple[float, float]]] = {}
        self.names: dict[tuple[int, float], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def processes(self) -> dict[tuple[int, float], tuple[str, psutil.Process]]:
        found = {}
        for label, pid in self.roots.items():
            try:
                root = psutil.Process(pid)
                family = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for process in family:
                try:
                    name = label if process.pid == pid else program(process.cmdline())
                    found[(process.pid, process.create_time())] = (name, process)
                except psutil.Error:
                    continue
        return found

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(SAMPLE_EVERY):
            at = time.monotonic() - start
            for key, (name, process) in self.processes().items():
                try:
                    uss = process.memory_full_info().uss / 2**20
                except psutil.Error:
                    continue
                self.names[key] = name
                self.samples.setdefault(key, []).append((at, uss))

    def __enter__(self) -> Memory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def verdict(self, warm: float, end: float) -> list[dict[str, Any]]:
        """Per process alive from warm-up to the end: MB after warm-up, at the end, growth."""
        rows = []
        for key, samples in self.samples.items():
            early = [m for t, m in samples if warm <= t < warm + 60]
            late = [m for t, m in samples if t >= end - 60]
            if not early or not late or samples[0][0] > warm:
                continue  # not there for the whole run (a short-lived backend, say)
            before, after = max(early), max(late)
            growth = (after - before) / before if before else 0.0
            rows.append(
                {
                    "process": self.names[key],
                    "pid": key[0],
                    "warm_mb": round(before, 1),
                    "end_mb": round(after, 1),
                    "growth": round(growth, 3),
                    "flat": growth <= GROWTH or after - before <= NOISE_MB,
                    # The trend: one sample every 30 s (seconds into the run, MB).
                    "trend": [
                        (round(t), round(m, 1)) for t, m in samples[:: int(30 / SAMPLE_EVERY)]
                    ],
                }
            )
        return sorted(rows, key=lambda r: (r["process"], r["pid"]))


def new_poll(system: Privpoll, name: str, voters: int) -> dict[str, str]:
    """A poll of ``voters`` voters in detect mode; its invitation tokens by voter."""
    return system.poll(name, voters, duplicates="detect")


def stored(dsn: str, poll: str) -> Counter[str]:
    from privpoll.db import storage

    with storage.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT a.voter FROM actors a JOIN polls p ON p.uid = a.poll WHERE p.name = %s",
            (poll,),
        ).fetchall()
    return Counter(str(r[0]) for r in rows)


def soak(minutes: float, rate: float, warmup: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="privpoll-soak-"))
    nats, pg = NatsServer(work / "nats"), PostgresServer(work / "postgres")
    nats.start()
    pg.start()
    rounds = max(1, round(minutes))
    seconds = minutes * 60 / rounds
    try:
        system = Privpoll(work, nats, pg)
        try:
            assert nats.process is not None
            assert pg.process is not None
            roots = {
                "privpoll up": system.process.pid,
                "nats-server": nats.process.pid,
                "postgres": pg.process.pid,
            }
            polls = [f"soak{i:02d}" for i in range(rounds)]
            per_poll = int(rate * seconds * 1.2) + 100
            with Memory(roots) as memory, Load(system.url, rate) as load:
                started = time.monotonic()
                tokens = new_poll(system, polls[0], per_poll)
                for i, poll in enumerate(polls):
                    voting = threading.Thread(target=load.run, args=(poll, tokens, seconds))
                    voting.start()
                    if i + 1 < len(polls):
                        tokens = new_poll(system, polls[i + 1], per_poll)
                    voting.join()
                    closed = system.http.post(f"/api/v1/polls/{poll}/close", headers=system.admin)
                    closed.raise_for_status()
                elapsed = time.monotonic() - started
            statuses = Counter(s for seen in load.answers.values() for s in seen)
            votes = []
            for poll in polls:
                acknowledged = load.acknowledged(poll)
                deadline = time.monotonic() + 300
                while not set(found := stored(pg.dsn, poll)) >= acknowledged:
                    if time.monotonic() > deadline:
                        break  # counted as lost below
                    time.sleep(1)
                votes.append(
                    {
                        "poll": poll,
                        "acknowledged": len(acknowledged),
                        "stored": sum(found.values()),
                        "lost": len(acknowledged - set(found)),
                        "stored_not_acknowledged": len(set(found) - acknowledged),
                        "stored_twice": sum(1 for n in found.values() if n > 1),
                    }
                )
            processes = memory.verdict(warmup, elapsed)
        finally:
            system.stop()
    finally:
        nats.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    sent = sum(len(seen) for seen in load.answers.values())
    return {
        "minutes": round(elapsed / 60, 2),
        "rate_wanted": rate,
        "rate_sent": round(sent / elapsed, 1),
        "answers": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "votes": votes,
        "memory": processes,
    }


def goals(found: dict[str, Any]) -> list[tuple[str, bool]]:
    votes = found["votes"]
    server_errors = sum(n for s, n in found["answers"].items() if s.startswith("5"))
    return [
        ("no vote lost", all(v["lost"] == 0 for v in votes)),
        ("nothing stored unacknowledged", all(v["stored_not_acknowledged"] == 0 for v in votes)),
        ("every vote stored once", all(v["stored_twice"] == 0 for v in votes)),
        ("no 5xx answer", server_errors == 0),
        ("rate held (90% of wanted)", found["rate_sent"] >= 0.9 * found["rate_wanted"]),
        ("memory of every process flat within 10%", all(p["flat"] for p in found["memory"])),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, help="votes/s (default: half the benchmark's)")
    parser.add_argument("--warmup", type=float, default=200.0, help="seconds before measuring")
    args = parser.parse_args()
    rate, why = (args.rate, "--rate") if args.rate else benchmarked_rate()
    print(f"soak: {args.minutes} min at {rate}/s ({why})", flush=True)
    found = soak(args.minutes, rate, min(args.warmup, args.minutes * 60 / 3))
    found["rate_source"] = why
    found["goals"] = {goal: met for goal, met in goals(found)}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = HERE / "results" / f"soak-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(found, indent=2) + "\n")
    print(json.dumps({k: found[k] for k in ("minutes", "rate_wanted", "rate_sent", "answers")}))
    for row in found["memory"]:
        mark = "" if row["flat"] else "  NOT FLAT"
        print(f"{row['process'][:48]:<48} {row['warm_mb']:>8} -> {row['end_mb']:>8} MB{mark}")
    for goal, met in goals(found):
        print(f"{goal:<45} {'met' if met else 'NOT MET'}")
    print(f"figures: {out.relative_to(HERE.parent)}")
    sys.exit(0 if all(found["goals"].values()) else 1)


if __name__ == "__main__":
    main()
