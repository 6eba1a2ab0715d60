"""Container images written by hand: an OCI image archive of one layer holding a few files,
the format `ctr images import` reads. No registry is reachable and no Docker engine runs, so
the cluster tests build their pause and echo images this way (a static Go binary each)."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile
from dataclasses import dataclass
from pathlib import Path

_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class File:
    """One file of the image: where it lands, its content, its mode."""

    path: str
    content: bytes
    mode: int = 0o755


def _blob(archive: tarfile.TarFile, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _add(archive, f"blobs/sha256/{digest.removeprefix('sha256:')}", data, 0o644)
    return digest


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    archive.addfile(info, io.BytesIO(data))


def _layer(files: list[File]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as layer:
        made: set[str] = set()
        for file in files:
            parts = file.path.strip("/").split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in made:
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    layer.addfile(info)
                    made.add(folder)
            _add(layer, "/".join(parts), file.content, file.mode)
    return out.getvalue()


def write_image(
    target: Path, name: str, files: list[File], entrypoint: list[str], user: str = "65534"
) -> Path:
    """Write an OCI archive of image `name` (e.g. localhost/privpoll-pause:1) to `target`."""
    layer = _layer(files)
    config = {
        "architecture": _ARCH.get(platform.machine(), platform.machine()),
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": user, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    with tarfile.open(target, mode="w") as archive:
        _add(archive, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}', 0o644)
        config_bytes = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _blob(archive, config_bytes),
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _blob(archive, layer),
                    "size": len(layer),
                }
            ],
        }
        manifest_bytes = json.dumps(manifest).encode()
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _blob(archive, manifest_bytes),
                    "size": len(manifest_bytes),
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                    },
                }
            ],
        }
        _add(archive, "index.json", json.dumps(index).encode(), 0o644)
    return target
