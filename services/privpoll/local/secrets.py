"""The secrets of ``privpoll up``, kept outside its data folder (docs/privacy.md).

A thief who copies the data folder must find nothing to forge with: the admin token, the key
that signs invitations and the key that encrypts the queue's store live in a folder of their
own, ``PRIVPOLL_SECRETS_DIR`` (default: ``<data folder>-secrets`` beside it), or come from the
environment. A ``secrets.json`` left in the data folder by an older privpoll moves there once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from privpoll.core import randomness
from privpoll.settings import Settings

FILE = "secrets.json"
NAMES = ("admin_token", "secret", "nats_key")


def folder(settings: Settings) -> Path:
    """The secrets folder of these settings' data folder."""
    if settings.secrets_dir is not None and str(settings.secrets_dir):
        return settings.secrets_dir.resolve()
    data = settings.data_dir.resolve()
    return data.parent / f"{data.name}-secrets"


def _read(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    found = json.loads(path.read_text())
    if not isinstance(found, dict):
        raise RuntimeError(f"{path} is not a JSON object: move it away and start again")
    return {str(k): str(v) for k, v in found.items()}


def _write(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(values, out)
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(path)


def stored(settings: Settings) -> dict[str, str]:
    """What the secrets folder holds (nothing yet: an empty dict)."""
    return _read(folder(settings) / FILE)


def load(settings: Settings) -> tuple[Settings, str]:
    """Settings with the admin token and HMAC key (the environment's first, else the secrets
    folder's, generated on first use), and the key that encrypts the queue's store."""
    path = folder(settings) / FILE
    values = _read(path)
    old = settings.data_dir.resolve() / FILE
    legacy = _read(old)
    changed = False
    for name in NAMES:
        if not values.get(name):
            values[name] = legacy.get(name) or randomness.token()
            changed = True
    if changed:
        _write(path, values)
    # Only once the secrets are safe in their folder does the data folder's copy go.
    old.unlink(missing_ok=True)
    updated = settings.model_copy(
        update={
            "admin_token": settings.admin_token or values["admin_token"],
            "secret": settings.secret or values["secret"],
        }
    )
    return updated, values["nats_key"]
