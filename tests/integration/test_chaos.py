"""The fault suite: under steady voting, break one part at a time and count what survives.

Each scenario checks what a voter and a poll creator would notice: every vote answered 202 is
stored exactly once (actors) with every ballot of its envelope exactly once (ballots), nothing
is stored that was not acknowledged, an outage answers 503 with Retry-After (never a hang,
never a 500), and the system recovers without anyone touching it. ``make chaos`` runs the
same scenarios bigger (PRIVPOLL_CHAOS_VOTES) and writes the figures to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.integration.conftest import CHOICES, System, Witness, poll_spec

VOTES = int(os.environ.get("PRIVPOLL_CHAOS_VOTES", "240"))
REPORT = Path(os.environ.get("PRIVPOLL_CHAOS_REPORT", "test-artifacts/chaos.json"))


# The longest a voter may wait for an answer, whatever breaks: the ingest gives up on NATS
# after twice the publish timeout and 5 s (9 s with the tests' PRIVPOLL_PUBLISH_TIMEOUT of 2)
# and answers 503. A longer wait is a hang, as a voter sees it, and fails the scenario.
ANSWER_WITHIN = 15.0
# How a connection cut by a crash looks to a client; only scenarios that crash or stop the
# ingest expect these. A timeout (the ingest silent) is never expected.
CUT = frozenset({"ConnectError", "RemoteProtocolError", "ReadError", "WriteError"})


@dataclass(frozen=True)
class Answer:
    """What one voter saw: the HTTP status (or the name of the client's error), the
    Retry-After header, and how long the answer took."""

    status: int | str
    retry_after: str | None
    seconds: float

    def problem(self, expected: frozenset[str]) -> str | None:
        """Why a voter would be right to complain, if they would."""
        if self.seconds > ANSWER_WITHIN:
            return f"answered after {self.seconds:.1f} s"
        if isinstance(self.status, str):
            return None if self.status in expected else f"{self.status} (not expected here)"
        if self.status >= 500 and self.status != 503:
            return f"HTTP {self.status}"
        if self.status == 503 and not (self.retry_after or "").isdigit():
            return "503 without a Retry-After of whole seconds"
        return None


@dataclass
class Load:
    """Voters voting steadily from a few threads, each answer recorded as the voter saw it.

    ``expected``: the connection errors the scenario's fault may cause (see CUT).
    """

    system: System
    poll: str
    tokens: dict[str, str]
    expected: frozenset[str] = frozenset()
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    _next: Iterator[str] = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._next = iter(sorted(self.tokens))

    def _one(self, voter: str) -> None:
        started = time.monotonic()
        try:
            response = self.system.vote(
                self.poll, voter, self.tokens[voter], CHOICES[hash(voter) % 3]
            )
            answer = Answer(
                response.status_code,
                response.headers.get("Retry-After"),
                time.monotonic() - started,
            )
        except httpx.HTTPError as error:
            answer = Answer(type(error).__name__, None, time.monotonic() - started)
        with self._lock:
            self.answers.setdefault(voter, []).append(answer)

    def run(self, threads: int = 4, pause: float = 0.01) -> None:
        def worker() -> None:
            while True:
                with self._lock:
                    voter = next(self._next, None)
                if voter is None:
                    return
                self._one(voter)
                time.sleep(pause)

        with ThreadPoolExecutor(threads) as pool:
            for _ in range(threads):
                pool.submit(worker)

    def retry_refused(self, timeout: float = 90, threads: int = 16) -> None:
        """Voters whose vote was not taken try again, as people would: each on their own,
        side by side (one after another, 1,700 refused voters took longer than the timeout)."""
        deadline = time.monotonic() + timeout

        def retry(voter: str) -> None:
            seen = self.answers[voter]
            while seen[-1].status != 202:
                assert time.monotonic() < deadline, f"{voter} could not vote again: {seen}"
                if seen[-1].status == 409:  # the vote did get in before the fault
                    break
                time.sleep(0.3)
                self._one(voter)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(retry, list(self.answers)))

    def statuses(self, voter: str) -> list[int | str]:
        return [answer.status for answer in self.answers[voter]]

    def acknowledged(self) -> set[str]:
        """Voters told their vote is in: 202, or 409 "already voted" on a retry, when the
        first answer was lost in the crash after the vote was queued."""
        return {v for v in self.answers if {202, 409} & set(self.statuses(v))}

    def refused(self) -> set[str]:
        return {v for v in self.answers if self.statuses(v)[0] != 202}

    def problems(self) -> list[str]:
        """Every answer a voter would complain about (none may be left)."""
        return [
            f"{voter}: {problem}"
            for voter, seen in sorted(self.answers.items())
            for answer in seen
            if (problem := answer.problem(self.expected)) is not None
        ]

    def counted(self) -> Counter[int | str]:
        return Counter(answer.status for seen in self.answers.values() for answer in seen)


def in_background(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work)
    thread.start()
    return thread


def verify(system: System, witness: Witness, poll: str, load: Load, fault: str) -> None:
    system.close(poll)
    envelopes = witness.envelopes()
    ballots_sent = {(str(b.id), b.choice) for e in envelopes for b in e.ballots}
    actors, ballots = system.wait_stored(poll, len(envelopes), len(ballots_sent), timeout=180)
    stored = Counter(v for _, v in actors)
    statuses = load.counted()
    # The re-mixer gives the rows fresh ids after the close: compare what they hold.
    sent = Counter(c for _, c in ballots_sent)
    assert Counter(c for _, c in ballots) == sent, "every ballot of every queued envelope, once"
    problems = load.problems()
    assert not problems, f"{len(problems)} answers a voter would complain about: {problems[:10]}"
    acknowledged = load.acknowledged()
    assert set(stored) == acknowledged, "stored: exactly the acknowledged voters"
    clean = acknowledged - load.refused()
    assert all(stored[v] == 1 for v in clean), "a vote answered 202 is stored exactly once"
    # A vote refused with 503 whose envelope reached the stream anyway (its ack was lost in
    # the crash) shows beside the retry: counted as a duplicate in the results, never silently.
    assert all(stored[v] <= 2 for v in acknowledged)
    _record(fault, load, stored, statuses)


def _record(fault: str, load: Load, stored: Counter[str], statuses: Counter[int | str]) -> None:
    record_figures(fault, len(load.answers), load.acknowledged(), stored, statuses)


def record_figures(
    fault: str,
    voters: int,
    acknowledged: set[str],
    stored: Counter[str],
    statuses: Counter[Any],
) -> None:
    """One fault's figures in the report (docs/reliability.md quotes them)."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    figures = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    figures[fault] = {
        "voters": voters,
        "acknowledged": len(acknowledged),
        "stored": sum(stored.values()),
        "lost": len(acknowledged - set(stored)),
        "duplicates_detected": sum(stored.values()) - len(stored),
        "answers": {str(k): v for k, v in sorted(statuses.items(), key=str)},
    }
    REPORT.write_text(json.dumps(figures, indent=2) + "\n")


def start_load(
    system: System, name: str, expected: frozenset[str] = frozenset()
) -> tuple[Witness, Load]:
    voters = [f"voter-{i:04d}" for i in range(VOTES)]
    system.create_poll(name, poll_spec(voters))
    witness = Witness(system.nats.url, name)
    return witness, Load(system, name, system.invitations(name), expected)


def test_postgres_down_for_fifteen_seconds(system: System) -> None:
    witness, load = start_load(system, "pgdown")
    voting = in_background(lambda: load.run(pause=0.1))
    time.sleep(1)
    system.postgres.stop()
    try:
        time.sleep(15)
    finally:
        system.postgres.start()  # the session's other tests need it back, whatever happens
    voting.join()
    # Votes only need NATS: the database outage delays storing them, nothing else.
    statuses = load.counted()
    assert statuses == {202: VOTES}, statuses
    verify(system, witness, "pgdown", load, "postgres stopped for 15 s")


def test_ingest_worker_killed(system: System) -> None:
    # The killed worker's open connections are cut: those voters see it, then retry.
    witness, load = start_load(system, "workerdown", expected=CUT)
    voting = in_background(load.run)
    time.sleep(0.5)
    master = psutil.Process(system.child_pid("ingest") or 0)
    workers = master.children()
    assert workers, "gunicorn runs workers"
    os.kill(workers[0].pid, signal.SIGKILL)
    voting.join()
    load.retry_refused()
    verify(system, witness, "workerdown", load, "ingest worker killed -9")


def test_everything_restarted(system: System) -> None:
    # While privpoll is down its port refuses connections, and open ones are cut.
    witness, load = start_load(system, "restart", expected=CUT)
    voting = in_background(load.run)
    time.sleep(0.5)
    system.stop()
    system.nats.kill()
    system.postgres.kill()
    voting.join()
    system.nats.start()
    system.postgres.start()
    system.http = httpx.Client(base_url=system.url, timeout=30)
    load.system = system
    system.start()
    load.retry_refused()
    verify(system, witness, "restart", load, "everything killed and restarted")


def test_what_a_voter_would_complain_about() -> None:
    """The judge of every scenario above (no server needed)."""
    fine = [
        Answer(202, None, 0.1),
        Answer(409, None, 0.1),
        Answer(503, "5", ANSWER_WITHIN),
        Answer("ReadError", None, 1.0),
    ]
    assert [a.problem(CUT) for a in fine] == [None] * len(fine)
    assert Answer("ReadError", None, 1.0).problem(frozenset()) == "ReadError (not expected here)"
    assert Answer("ReadTimeout", None, 30.0).problem(CUT) == "answered after 30.0 s"
    assert Answer("ReadTimeout", None, 1.0).problem(CUT) == "ReadTimeout (not expected here)"
    assert Answer(503, None, 0.1).problem(CUT) == "503 without a Retry-After of whole seconds"
    assert Answer(503, "soon", 0.1).problem(CUT) == "503 without a Retry-After of whole seconds"
    assert Answer(500, None, 0.1).problem(CUT) == "HTTP 500"
    assert Answer(202, None, ANSWER_WITHIN + 1).problem(CUT) == "answered after 16.0 s"
