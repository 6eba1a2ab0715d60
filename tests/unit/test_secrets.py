"""privpoll up's secrets live outside its data folder: a copy of that folder forges nothing."""

from __future__ import annotations

import json
from pathlib import Path

from privpoll.local import secrets
from privpoll.settings import Settings


def everything_under(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file())


def test_secrets_are_kept_beside_the_data_folder_not_in_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    (tmp_path / "data").mkdir()
    loaded, store_key = secrets.load(settings)
    assert secrets.folder(settings) == tmp_path / "data-secrets"
    kept = secrets.stored(settings)
    assert kept["admin_token"] == loaded.admin_token
    assert kept["secret"] == loaded.secret
    assert kept["nats_key"] == store_key
    assert (secrets.folder(settings) / secrets.FILE).stat().st_mode & 0o077 == 0
    on_disk = everything_under(tmp_path / "data")
    for value in (loaded.admin_token, loaded.secret, store_key):
        assert value.encode() not in on_disk
    # The next start reads the same secrets.
    assert secrets.load(settings) == (loaded, store_key)


def test_a_secrets_json_in_the_data_folder_moves_out_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secrets.json").write_text(json.dumps({"admin_token": "old-token", "secret": "k"}))
    settings = Settings(data_dir=data, secrets_dir=tmp_path / "elsewhere")
    loaded, _ = secrets.load(settings)
    assert (loaded.admin_token, loaded.secret) == ("old-token", "k")
    assert not (data / "secrets.json").exists()
    assert secrets.stored(settings)["admin_token"] == "old-token"


def test_the_environment_wins(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_token="mine", secret="hmac")
    loaded, _ = secrets.load(settings)
    assert (loaded.admin_token, loaded.secret) == ("mine", "hmac")
