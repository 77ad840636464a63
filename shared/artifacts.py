"""The artifact store: a directory tree under ``$GENQUEUE_DATA_DIR/artifacts`` (a shared volume in compose).

Paths stored in Postgres are relative to the root; every lookup is checked to stay inside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from shared.settings import get_settings


class ArtifactStore:
    def __init__(self, root: Path | None = None):
        self.root = Path(root or get_settings().artifacts_dir).resolve()

    def path(self, rel: str) -> Path:
        """Absolute path of ``rel``; refuses anything that escapes the root."""
        p = (self.root / rel).resolve()
        if p != self.root and self.root not in p.parents:
            raise ValueError(f"path escapes the artifact store: {rel!r}")
        return p

    def job_dir(self, job_id: str) -> Path:
        """A job's working directory (checkpoints, models); the same across attempts, so retries resume."""
        d = self.path(f"jobs/{job_id}")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def put_bytes(self, rel: str, data: bytes) -> tuple[int, str]:
        """Write ``data`` atomically at ``rel``; return (size, sha256)."""
        target = self.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return len(data), hashlib.sha256(data).hexdigest()

    def put_stream(self, rel: str, stream: BinaryIO, max_bytes: int) -> tuple[int, str]:
        """Copy ``stream`` to ``rel`` atomically, hashing as it goes; raise ``TooLarge`` past ``max_bytes``."""
        target = self.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        digest, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as f:
                while chunk := stream.read(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(max_bytes)
                    digest.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return size, digest.hexdigest()

    def delete(self, rel: str) -> None:
        p = self.path(rel)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"larger than the limit of {limit} bytes")
        self.limit = limit
