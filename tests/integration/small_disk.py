"""A small filesystem that fills: a tmpfs of a few MB mounted over a server's data folder, and
a ballast file that takes all but a little of its space."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.environment import need


@contextlib.contextmanager
def small_disk(path: Path, size: str, mode: str = "0755") -> Iterator[Path]:
    """``path`` on a tmpfs of ``size`` (e.g. ``8m``) until the block ends; skips the test
    where mounting is not allowed, with the reason."""
    mount = shutil.which("mount")
    need(os.geteuid() == 0 and mount is not None, "root and mount(8), to mount a tmpfs")
    assert mount is not None
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    need(done.returncode == 0, f"a tmpfs of {size} (mount said {done.stderr.strip()!r})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True, check=False)


def free_bytes(path: Path) -> int:
    found = os.statvfs(path)
    return found.f_bavail * found.f_frsize


def fill(path: Path, leave: int) -> Path:
    """A ballast file in ``path`` that leaves about ``leave`` bytes of its filesystem free
    (none, if the server wrote the rest meanwhile)."""
    ballast = path / "ballast"
    remaining = free_bytes(path) - leave
    chunk = b"\0" * (1 << 20)
    with ballast.open("wb") as out:
        while remaining > 0:
            try:
                out.write(chunk[: min(remaining, len(chunk))])
                out.flush()
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
            remaining -= len(chunk)
    return ballast
