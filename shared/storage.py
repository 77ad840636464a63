"""The object store every artifact, dataset, checkpoint and trained model goes through.

``GENQUEUE_STORAGE_URL`` picks the backend: ``file:///abs/dir`` (unset: ``$GENQUEUE_DATA_DIR/artifacts``, one host)
or ``s3://bucket/prefix`` for any S3-compatible service (AWS S3, MinIO, Ceph RGW, R2), reached through boto3 and
configured the standard AWS way (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, profiles, instance roles). boto3 rather than obstore: its credential chain is the one operators
already know, our workers are synchronous, and its transfer manager streams multipart uploads of large files.

Keys are ``/``-separated relative paths (``jobs/<id>/artifacts/…``, ``datasets/<id>/<name>``, ``models/<id>/…``);
a "directory" is a key prefix. A directory written with :meth:`Storage.put_dir` carries a ``MANIFEST.json`` (each
file's size and sha256), which is what readers verify and cache by.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from shared.settings import get_settings

CHUNK = 1 << 20
MANIFEST = "MANIFEST.json"


class StorageError(Exception):
    """A stored object cannot be used; ``key`` names it."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class ObjectMissing(StorageError):
    """No object under ``key`` (deleted, never uploaded, or written to another host's disk)."""

    def __init__(self, key: str):
        super().__init__(key, f"stored object {key!r} is missing")


class ObjectUnreadable(StorageError):
    """The object exists but cannot be read, or its bytes do not match the recorded sha256."""


class StorageUnavailable(StorageError, ConnectionError):
    """The store cannot be reached (a connection refused or timed out): worth retrying, not the object's fault (a
    ``ConnectionError``, so a worker's runtime retries the job as it does for a lost database connection)."""


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"larger than the limit of {limit} bytes")
        self.limit = limit


def check_key(key: str) -> str:
    """``key`` if it is a clean relative path; refuses ``..``, absolute paths and empty segments."""
    parts = key.strip("/").split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise ValueError(f"not a valid storage key: {key!r}")
    return key.strip("/")


def sha256_file(path: Path) -> tuple[int, str]:
    """(size, sha256) of a local file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def spool(stream: BinaryIO, dest: Path, max_bytes: int | None = None) -> tuple[int, str]:
    """Copy ``stream`` to the local file ``dest`` in chunks, hashing; ``TooLarge`` past ``max_bytes``."""
    digest, size = hashlib.sha256(), 0
    with open(dest, "wb") as f:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise TooLarge(max_bytes)
            digest.update(chunk)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    return size, digest.hexdigest()


def dir_files(root: Path) -> list[Path]:
    """Regular files under ``root`` (no hidden names, no symlinks), sorted."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink() and not _hidden(p, root))


def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


class Storage:
    """The backend interface: a handful of whole-object operations, no partial writes, no URLs handed out."""

    url: str

    # -- the primitives each backend implements ---------------------------------------------------------------
    def put_file(self, key: str, path: Path) -> tuple[int, str]:
        """Upload the local file ``path`` as ``key``, atomically (readers see old or new object); (size, sha256)."""
        raise NotImplementedError

    def open(self, key: str) -> BinaryIO:
        """A readable stream of ``key``; :class:`ObjectMissing` / :class:`ObjectUnreadable`. Close it."""
        raise NotImplementedError

    def list(self, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object under the directory ``prefix``, sorted."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove the object ``key`` and everything under the directory ``key`` (absent: nothing happens)."""
        raise NotImplementedError

    # -- built on them ---------------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        try:
            self.open(key).close()
        except ObjectMissing:
            return False
        return True

    def put_bytes(self, key: str, data: bytes) -> tuple[int, str]:
        with tempfile.TemporaryDirectory(prefix="genqueue-put-") as tmp:
            path = Path(tmp, "obj")
            path.write_bytes(data)
            return self.put_file(key, path)

    def put_stream(self, key: str, stream: BinaryIO, max_bytes: int | None = None) -> tuple[int, str]:
        """Stream ``stream`` into ``key`` through a local temporary file (never whole in memory); (size, sha256)."""
        with tempfile.TemporaryDirectory(prefix="genqueue-put-") as tmp:
            path = Path(tmp, "obj")
            spool(stream, path, max_bytes)
            return self.put_file(key, path)

    def get_to_path(self, key: str, dest: Path, sha256: str | None = None) -> tuple[int, str]:
        """Download ``key`` to ``dest`` (temp + rename), checking ``sha256`` when given; (size, sha256)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            with self.open(key) as src:
                size, sha = spool(src, tmp)
            if sha256 is not None and sha != sha256:
                raise ObjectUnreadable(key, f"stored object {key!r} does not match its sha256 (corrupted or replaced)")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return size, sha

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        with self.open(key) as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def put_dir(self, prefix: str, root: Path, only: list[Path] | None = None) -> dict:
        """Upload every file under ``root`` (or the files ``only``) to ``prefix/…``, then its manifest (written last:
        a directory whose manifest exists is complete). Returns the manifest ``{"files": {rel: {size, sha256}}}``."""
        files = {}
        for p in dir_files(root) if only is None else only:
            rel = p.relative_to(root).as_posix()
            size, sha = self.put_file(f"{prefix}/{rel}", p)
            files[rel] = {"size": size, "sha256": sha}
        manifest = {"files": files}
        self.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, sort_keys=True).encode())
        return manifest

    def manifest(self, prefix: str) -> tuple[dict, str]:
        """(manifest, its sha256) of the directory ``prefix``; :class:`ObjectMissing` if it was never completed."""
        with self.open(f"{prefix}/{MANIFEST}") as f:
            raw = f.read()
        try:
            return json.loads(raw), hashlib.sha256(raw).hexdigest()
        except ValueError as exc:
            raise ObjectUnreadable(prefix, f"the manifest of {prefix!r} is not JSON") from exc

    def get_dir(self, prefix: str, dest: Path, manifest: dict | None = None) -> None:
        """Download the directory ``prefix`` into ``dest``, each file checked against the manifest."""
        manifest = manifest or self.manifest(prefix)[0]
        for rel, meta in manifest["files"].items():
            self.get_to_path(f"{prefix}/{check_key(rel)}", Path(dest, rel), sha256=meta["sha256"])


class FileStorage(Storage):
    """Objects as files under ``root`` (one host, or a shared mount)."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()

    def path(self, key: str) -> Path:
        """The file behind ``key``; refuses anything that escapes the root."""
        p = (self.root / check_key(key)).resolve()
        if self.root not in p.parents:
            raise ValueError(f"key escapes the store: {key!r}")
        return p

    def put_file(self, key: str, path: Path) -> tuple[int, str]:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(path, "rb") as src:
                size, sha = spool(src, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return size, sha

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectMissing(key) from exc
        except OSError as exc:
            raise ObjectUnreadable(key, f"stored object {key!r} cannot be read: {exc.strerror}") from exc

    def list(self, prefix: str) -> list[tuple[str, int]]:
        root = self.path(prefix)
        if not root.is_dir():
            return []
        return [(f"{check_key(prefix)}/{p.relative_to(root).as_posix()}", p.stat().st_size) for p in dir_files(root)]

    def delete(self, key: str) -> None:
        p = self.path(key)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


class S3Storage(Storage):
    """Objects in an S3-compatible bucket under ``prefix``; one boto3 client per process (clients are not fork-safe)."""

    def __init__(self, bucket: str, prefix: str = ""):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client, self._pid = None, None

    @property
    def client(self):
        if self._client is None or self._pid != os.getpid():
            import boto3  # only a process that uses S3 pays for importing it
            from botocore.config import Config

            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)  # the standard variable, if set
            cfg = Config(retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=10, read_timeout=60)
            self._client, self._pid = boto3.session.Session().client("s3", region_name=region, config=cfg), os.getpid()
        return self._client

    def _key(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _reachable(self, key: str):
        """A connection error becomes :class:`StorageUnavailable` (the API's 503), not an unexpected exception."""
        from botocore.exceptions import ConnectionError as BotoConnectionError

        try:
            yield
        except BotoConnectionError as exc:
            raise StorageUnavailable(key, f"the object store at {self.url} cannot be reached: {exc}") from exc

    def put_file(self, key: str, path: Path) -> tuple[int, str]:
        size, sha = sha256_file(path)
        with self._reachable(key):
            self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs={"Metadata": {"sha256": sha}})
        return size, sha

    def open(self, key: str) -> BinaryIO:
        from botocore.exceptions import ClientError

        try:
            with self._reachable(key):
                return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissing(key) from exc
            raise ObjectUnreadable(key, f"stored object {key!r} cannot be read: {code or exc}") from exc

    def list(self, prefix: str) -> list[tuple[str, int]]:
        full = self._key(prefix) + "/"
        cut = len(self.prefix) + 1 if self.prefix else 0
        out = []
        with self._reachable(prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                out += [(o["Key"][cut:], o["Size"]) for o in page.get("Contents", [])]
        return sorted(out)

    def delete(self, key: str) -> None:
        keys = [self._key(k) for k, _ in self.list(key)] + [self._key(key)]
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            with self._reachable(key):
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})


def storage_from_url(url: str) -> Storage:
    """The backend a ``GENQUEUE_STORAGE_URL`` names; ``ValueError`` for anything else."""
    parts = urlparse(url)
    if parts.scheme == "file":
        if not parts.path.startswith("/") or parts.netloc not in ("", "localhost"):
            raise ValueError(f"GENQUEUE_STORAGE_URL {url!r}: a file URL needs an absolute path (file:///dir)")
        return FileStorage(Path(parts.path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"GENQUEUE_STORAGE_URL {url!r}: name the bucket (s3://bucket/prefix)")
        return S3Storage(parts.netloc, parts.path)
    raise ValueError(f"GENQUEUE_STORAGE_URL {url!r}: use file:///dir or s3://bucket/prefix")


@lru_cache(maxsize=1)
def get_storage() -> Storage:
    """The process's store, from the settings (read once)."""
    settings = get_settings()
    return storage_from_url(settings.storage_url or settings.artifacts_dir.resolve().as_uri())
