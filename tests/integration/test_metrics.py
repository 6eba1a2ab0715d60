"""/metrics under load: one consistent sum over the ingest's workers, as Prometheus reads it."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from privpoll.local.embedded import NatsServer, PostgresServer, free_port
from tests.integration.conftest import CHOICES, System, poll_spec

VOTERS = [f"voter-{i:04d}" for i in range(600)]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(system: System) -> Samples:
    """Every sample of a counter or histogram, which Prometheus expects never to go back."""
    response = system.http.get("/metrics")
    assert response.status_code == 200
    text = response.text
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        assert f"# HELP {family.name}" in text, family.name
        assert f"# TYPE {family.name}" in text, family.name
        if family.type not in ("counter", "histogram"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def never_back(before: Samples, after: Samples) -> None:
    for key, value in before.items():
        assert key in after, f"{key} vanished"
        assert after[key] >= value, f"{key} went back from {value} to {after[key]}"


def test_counters_sum_the_workers_and_never_go_back(system: System) -> None:
    system.create_poll("scraped", poll_spec(VOTERS))
    tokens = system.invitations("scraped")
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def cast(voter: str) -> None:
        # Every tenth voter sends a wrong token: errors are counted too.
        token = "forged" if voter.endswith("7") else tokens[voter]
        status = system.vote("scraped", voter, token, CHOICES[hash(voter) % 3]).status_code
        with lock:
            statuses[status] += 1

    scrapes = [scrape(system)]
    half = len(VOTERS) // 2
    with ThreadPoolExecutor(8) as pool:
        voting = pool.map(cast, VOTERS[:half])
        for _ in range(5):
            scrapes.append(scrape(system))
        list(voting)
    # A worker dies: its counts stay in the sum (prometheus_client marks it dead). The wait
    # outlasts gunicorn's keep-alive, so no voter reuses a connection to the dead worker.
    master = psutil.Process(system.child_pid("ingest") or 0)
    os.kill(master.children()[0].pid, signal.SIGKILL)
    time.sleep(3)
    scrapes.append(scrape(system))
    with ThreadPoolExecutor(8) as pool:
        done = pool.map(cast, VOTERS[half:])
        for _ in range(5):
            scrapes.append(scrape(system))
        list(done)
    scrapes.append(scrape(system))
    for before, after in itertools.pairwise(scrapes):
        never_back(before, after)
    final = scrapes[-1]
    accepted = final[("privpoll_votes_accepted_total", ())]
    forged = final[("privpoll_api_errors_total", (("code", "invalid_token"),))]
    answered = sum(v for (name, _), v in final.items() if name == "privpoll_vote_seconds_count")
    print(
        f"\n/metrics after {len(scrapes)} scrapes: {dict(statuses)} answered; "
        f"votes_accepted_total {accepted:.0f}, invalid_token {forged:.0f}, "
        f"vote latency observations {answered:.0f}"
    )
    assert accepted == statuses[202]
    assert forged == statuses[403]
    assert answered == sum(statuses.values())


def _two_free_ports() -> int:
    """A free port whose next one is free too: the actors sink takes the first, the ballots
    sink the second (privpoll up's rule for one PRIVPOLL_SINK_METRICS_ADDR)."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def test_the_sinks_count_their_batches_and_lag_on_their_own_port(
    tmp_path: Path, nats: NatsServer, postgres: PostgresServer
) -> None:
    port = _two_free_ports()
    system = System(
        tmp_path / "system",
        nats,
        postgres,
        env={"PRIVPOLL_SINK_METRICS_ADDR": f"127.0.0.1:{port}"},
    )
    system.start()
    try:
        voters = VOTERS[:100]
        system.create_poll("sunk", poll_spec(voters))
        tokens = system.invitations("sunk")
        for voter in voters:
            assert system.vote("sunk", voter, tokens[voter], "tacos").status_code == 202
        # The last envelopes wait for more to mix with until the poll closes.
        system.close("sunk")
        for offset, role in enumerate(("actors", "ballots")):
            deadline = time.monotonic() + 120
            while True:
                try:
                    text = httpx.get(f"http://127.0.0.1:{port + offset}/metrics", timeout=10).text
                except httpx.ConnectError as error:  # a sink (re)starting: not listening yet
                    text, samples = str(error), {}
                else:
                    samples = {
                        (s.name, s.labels.get("role")): s.value
                        for family in text_string_to_metric_families(text)
                        for s in family.samples
                    }
                if samples.get(("privpoll_sink_batch_envelopes_sum", role)) == len(voters):
                    break
                assert time.monotonic() < deadline, f"{role}: {text}\n{system.output()}"
                time.sleep(0.5)
            batches = samples[("privpoll_sink_batch_envelopes_count", role)]
            rows = samples[("privpoll_sink_rows_total", role)]
            print(f"\n{role} sink: {batches:.0f} batches, {rows:.0f} rows")
            assert samples[("privpoll_sink_batch_envelopes_sum", role)] == len(voters)
            assert samples[("privpoll_sink_rows_total", role)] >= len(voters)
            assert samples[("privpoll_sink_lag_seconds_count", role)] >= 1
            assert ("privpoll_sink_pending_envelopes", role) in samples
            for word in [*voters, *CHOICES, *tokens.values()]:
                assert word not in text, f"the {role} sink's /metrics names {word}"
    finally:
        system.stop()
