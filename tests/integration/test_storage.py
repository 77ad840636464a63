"""The storage layer on both backends (a directory, and a real S3 API server process: moto's), the local cache, and
what the API answers for an object that is gone."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import time
from pathlib import Path

import pytest

from shared.objcache import ObjectCache
from shared.storage import (
    MANIFEST,
    FileStorage,
    ObjectMissing,
    ObjectUnreadable,
    S3Storage,
    TooLarge,
    storage_from_url,
)
from tests.stack import use_storage_env


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return FileStorage(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    mp = request.getfixturevalue("monkeypatch")
    for k, v in server.env().items():
        mp.setenv(k, v)
    return S3Storage(server.bucket, f"t-{time.time_ns()}")


def test_put_open_list_delete(store, tmp_path):
    size, sha = store.put_bytes("jobs/j1/artifacts/a.txt", b"hello")
    assert (size, sha) == (5, hashlib.sha256(b"hello").hexdigest())
    with store.open("jobs/j1/artifacts/a.txt") as f:
        assert f.read() == b"hello"
    store.put_bytes("jobs/j1/artifacts/a.txt", b"hello again")  # an overwrite replaces the whole object
    assert b"".join(store.iter_bytes("jobs/j1/artifacts/a.txt")) == b"hello again"
    store.put_bytes("jobs/j1/other.bin", b"x" * 10)
    store.put_bytes("jobs/j10/not-under-j1", b"y")
    assert store.list("jobs/j1") == [("jobs/j1/artifacts/a.txt", 11), ("jobs/j1/other.bin", 10)]
    assert store.exists("jobs/j1/other.bin") and not store.exists("jobs/j1/nope")
    store.delete("jobs/j1")
    assert store.list("jobs/j1") == [] and store.exists("jobs/j10/not-under-j1")
    with pytest.raises(ObjectMissing):
        store.open("jobs/j1/artifacts/a.txt")
    store.delete("jobs/never-there")  # nothing to delete is not an error


def test_streams_are_capped_and_leave_nothing(store):
    big = io.BytesIO(b"z" * (3 << 20))
    with pytest.raises(TooLarge):
        store.put_stream("datasets/d1/big.txt", big, max_bytes=2 << 20)
    assert store.list("datasets/d1") == []
    size, _ = store.put_stream("datasets/d1/ok.txt", io.BytesIO(b"z" * (3 << 20)), max_bytes=4 << 20)
    assert size == 3 << 20


def test_directories_round_trip_with_a_verified_manifest(store, tmp_path):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "w.safetensors").write_bytes(b"\x00" * 1000)
    (src / ".hidden").write_text("temp")
    manifest = store.put_dir("models/m1", src)
    assert set(manifest["files"]) == {"config.json", "sub/w.safetensors"}
    store.get_dir("models/m1", tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "w.safetensors").read_bytes() == b"\x00" * 1000
    store.put_bytes("models/m1/config.json", b'{"tampered": 1}')  # bytes that no longer match the manifest
    with pytest.raises(ObjectUnreadable, match="sha256"):
        store.get_dir("models/m1", tmp_path / "out2")
    with pytest.raises(ObjectMissing):
        store.manifest("models/never-written")  # a directory without its manifest was never completed


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a//b", "a/./b", "", "a/../../b"])
def test_keys_cannot_escape(key, tmp_path):
    with pytest.raises(ValueError):
        FileStorage(tmp_path).put_bytes(key, b"x")


def test_storage_urls():
    assert isinstance(storage_from_url("file:///tmp/x"), FileStorage)
    s3 = storage_from_url("s3://bucket/some/prefix")
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    for bad in ("file://relative/dir", "s3:///nobucket", "gs://b/p", "/just/a/path"):
        with pytest.raises(ValueError):
            storage_from_url(bad)


# -- the cache ----------------------------------------------------------------------------------------------------
def test_cache_downloads_once_verifies_and_evicts_least_recently_used(store, tmp_path):
    blobs = {f"datasets/d{i}/f.bin": bytes([i]) * 4000 for i in range(4)}
    shas = {k: store.put_bytes(k, v)[1] for k, v in blobs.items()}
    cache = ObjectCache(tmp_path / "cache", max_bytes=10_000, storage=store, grace_seconds=0)
    keys = list(blobs)
    first = cache.file(keys[0], shas[keys[0]])
    assert first.read_bytes() == blobs[keys[0]]
    store.delete(keys[0])
    assert cache.file(keys[0], shas[keys[0]]) == first  # a hit: not downloaded again (it is gone from the store)
    cache.file(keys[1], shas[keys[1]])
    cache.file(keys[0], shas[keys[0]])  # used again: now more recent than keys[1]
    cache.file(keys[2], shas[keys[2]])  # 3 × 4000 bytes > 10 000: the least recently used (keys[1]) goes
    assert {p.name for _, _, p in cache.entries()} == {shas[keys[0]], shas[keys[2]]}
    cache.file(keys[3], shas[keys[3]])
    assert {p.name for _, _, p in cache.entries()} == {shas[keys[2]], shas[keys[3]]}
    assert sum(size for _, size, _ in cache.entries()) <= 10_000
    with pytest.raises(ObjectUnreadable):  # the recorded sha256 does not match the bytes: never cached
        cache.file(keys[1], "0" * 64)
    assert not (tmp_path / "cache" / "objects" / ("0" * 64)).exists()


def _fill(root: str, url: str, key: str, sha: str, out) -> None:
    cache = ObjectCache(Path(root), 1 << 30, storage_from_url(url))
    out.put(str(cache.file(key, sha)))


def test_cache_is_shared_by_processes(tmp_path):
    store = FileStorage(tmp_path / "store")
    _, sha = store.put_bytes("datasets/d/big.bin", b"q" * (8 << 20))
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_fill, args=(str(tmp_path / "c"), store.url, "datasets/d/big.bin", sha, out))]
    procs.append(ctx.Process(target=_fill, args=(str(tmp_path / "c"), store.url, "datasets/d/big.bin", sha, out)))
    for p in procs:
        p.start()
    paths = {out.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(30)
    assert len(paths) == 1 and Path(paths.pop()).stat().st_size == 8 << 20
    assert [p.name for p in (tmp_path / "c" / "objects").iterdir()] == [sha]  # one entry, no leftover partials


def test_tree_entries_keep_their_mtime_when_used(store, tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    (src / "a.txt").write_text("a")
    store.put_dir("models/m", src)
    cache = ObjectCache(tmp_path / "cache", 1 << 20, store)
    entry = cache.tree("models/m")
    stamp = entry.stat().st_mtime_ns  # what the loaded-model cache keys by
    time.sleep(0.01)
    assert cache.tree("models/m") == entry and entry.stat().st_mtime_ns == stamp
    assert (entry / "a.txt").read_text() == "a" and not (entry / MANIFEST).exists()


# -- the API: a stored object that is gone is a 410, never a 500 ----------------------------------------------------
@pytest.mark.parametrize("backend", ["file", "s3"])
def test_missing_objects_answer_410(request, backend, app, client, user, tiny_model_dir, monkeypatch):
    from shared.storage import get_storage
    from tests.factories import finished_job, trained_model

    if backend == "s3":
        server = request.getfixturevalue("s3_server")
        for k in server.env():
            monkeypatch.setenv(k, server.env(f"api-{time.time_ns()}")[k])
        use_storage_env({})
    try:
        job_id = finished_job(user.id)
        art = client.get(f"/api/v1/jobs/{job_id}/artifacts").get_json()["items"][0]
        assert client.get(f"/api/v1/artifacts/{art['id']}").data == b"an artifact"
        model = trained_model(user.id, job_id, tiny_model_dir)
        assert client.get(f"/api/v1/models/{model.id}/download").status_code == 200
        get_storage().delete(f"jobs/{job_id}")
        get_storage().delete(f"models/{model.id}")
        for url in (f"/api/v1/artifacts/{art['id']}", f"/api/v1/models/{model.id}/download"):
            resp = client.get(url)
            assert resp.status_code == 410, (url, resp.status_code, resp.data[:200])
            assert resp.get_json()["error"]["code"] == "object_missing"
        assert client.get("/api/v1/artifacts/art_nope").status_code == 404  # no such row: 404
    finally:
        monkeypatch.undo()
        use_storage_env({})


def test_an_unreachable_store_is_a_503(app, client, monkeypatch):
    from tests.stack import free_port

    monkeypatch.setenv("GENQUEUE_STORAGE_URL", "s3://nowhere/x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no retries with backoff: the answer is the same, sooner
    use_storage_env({})
    try:
        resp = client.post(
            "/api/v1/datasets",
            data={"file": (io.BytesIO(b"some text\n" * 50), "t.txt")},
            content_type="multipart/form-data",
        )
        assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "unavailable", resp.data[:300]
    finally:
        monkeypatch.undo()
        use_storage_env({})
