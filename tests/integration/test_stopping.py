"""Long-running roles stop on SIGTERM, as Kubernetes and podman stop them.

A container's PID 1 gets no default action for SIGTERM: a role that only handles Ctrl-C waits
out the grace period and is killed (exit 137). Each role here must exit 0 within 5 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privpoll.local.embedded import NatsServer, PostgresServer

from .conftest import fresh_database

STOP_WITHIN = 5.0


@pytest.mark.parametrize(
    "role", [["sink", "actors"], ["sink", "ballots"], ["remixer"]], ids=lambda r: "-".join(r)
)
def test_a_role_stops_on_sigterm_with_exit_0(
    role: list[str], tmp_path: Path, nats: NatsServer, postgres: PostgresServer
) -> None:
    env = {
        **os.environ,
        "PRIVPOLL_NATS_URL": nats.url,
        "PRIVPOLL_DATABASE_URL": fresh_database(postgres, "stopping"),
        "PRIVPOLL_DATA_DIR": str(tmp_path / "data"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "privpoll", *role],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        # Long enough to be connected and inside its loop.
        time.sleep(3)
        assert process.poll() is None, process.communicate()[0].decode()
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = process.wait(timeout=STOP_WITHIN + 5)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read().decode() if process.stdout else ""
    assert code == 0, f"exit {code} after SIGTERM\n{output}"
    assert took < STOP_WITHIN, f"took {took:.1f} s to stop\n{output}"
    assert "Traceback" not in output, output
