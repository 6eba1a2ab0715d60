"""The ingest's gunicorn command line (privpoll.web.gunicorn_conf), run for real."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from privpoll.local.embedded import free_port
from privpoll.local.runner import gunicorn_argv
from privpoll.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def hello(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
    """The smallest WSGI app: the test is about the server, not privpoll's app."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_the_ingest_server_leaves_nothing_in_the_home_folder(tmp_path: Path) -> None:
    """gunicorn 25.1 and later open a control socket in the home folder unless told not
    to: every privpoll up on a machine would take it from the one before, and a read-only
    root filesystem makes each start warn."""
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    settings = Settings(http_addr=f"127.0.0.1:{port}", ingest_workers=1, ingest_threads=2)
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env["HOME"] = str(home)
    env.update(settings.to_env())
    argv = gunicorn_argv("tests.integration.test_ingest_server:hello")
    server = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                assert server.poll() is None, "gunicorn exited before it answered"
                assert time.monotonic() < deadline, "gunicorn did not answer within 30 s"
                time.sleep(0.1)
        assert answer.text == "hello"
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert list(home.iterdir()) == [], output.decode()
    assert b"control socket" not in output.lower(), output.decode()
