"""Checkpoint storage: the same tests against local disk (path and file://) and a real S3 server.

The S3 cases run against SeaweedFS started by `tests/s3server.py`, with a fresh bucket per
test. Failures are produced for real: a stopped or killed server, a file-size limit that makes
the kernel refuse a write (`RLIMIT_FSIZE`) in a child process, wrong credentials.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.s3server import SeaweedS3, free_ports, s3_server  # noqa: F401  (s3_server is a fixture)
from training.checkpoint.errors import InvalidUriError, ObjectNotFoundError, StorageError
from training.checkpoint.storage import (
    TEMP_SUFFIX,
    LocalStorage,
    S3Options,
    S3Storage,
    Sha256Reader,
    Storage,
    join_uri,
    local_path,
    parse_s3_uri,
    storage_for,
)

MiB = 1024 * 1024
# Small parts so that a 20 MiB file goes up and comes down in three parts.
TEST_S3_OPTIONS = S3Options(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4,
                            max_attempts=2, connect_timeout=2, read_timeout=10)
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Backend:
    """One storage under test and a fresh, empty prefix in it."""

    kind: str
    storage: Storage
    base: str

    def uri(self, *parts: str) -> str:
        return join_uri(self.base, *parts)


def use_server_env(monkeypatch: pytest.MonkeyPatch, server: SeaweedS3) -> None:
    """Point boto3 at the test server only: its keys, its endpoint, no config files, no metadata service."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture(params=["path", "file-uri", pytest.param("s3", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """Each storage implementation behind `storage_for`, on an empty prefix."""
    if request.param == "path":
        base = str(tmp_path / "store" / "run")
    elif request.param == "file-uri":
        base = f"file://{tmp_path}/store/run"
    else:
        server: SeaweedS3 = request.getfixturevalue("s3_server")
        use_server_env(monkeypatch, server)
        base = f"s3://{server.create_bucket()}/run"
    return Backend(request.param, storage_for(base, s3_options=TEST_S3_OPTIONS), base)


def random_file(path: Path, size: int) -> str:
    """Write `size` random bytes to `path`; returns their sha256."""
    data = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(directory: Path) -> list[str]:
    """Temp files of interrupted writes still lying in `directory`."""
    return sorted(p.name for p in directory.iterdir() if TEMP_SUFFIX in p.name)


# ---- round trips -------------------------------------------------------------------------------


def test_bytes_round_trip_and_overwrite(backend: Backend) -> None:
    uri = backend.uri("step-1", "manifest.json")
    backend.storage.write_bytes(uri, b'{"step": 1}')
    assert backend.storage.read_bytes(uri) == b'{"step": 1}'
    assert backend.storage.size(uri) == 11
    backend.storage.write_bytes(uri, b"")
    assert backend.storage.read_bytes(uri) == b""
    assert backend.storage.size(uri) == 0


def test_large_file_round_trip(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "local" / "rank0.pt"
    digest = random_file(source, 20 * MiB)  # > 2 parts of 8 MiB
    uri = backend.uri("step-2", "rank0.pt")
    backend.storage.upload_file(source, uri)
    assert backend.storage.size(uri) == 20 * MiB
    target = tmp_path / "restored" / "deep" / "rank0.pt"
    backend.storage.download_file(uri, target)
    assert sha256(target) == digest
    assert leftovers(target.parent) == []


@pytest.mark.parametrize("size", [0, 1 * MiB, 20 * MiB])  # empty, one PUT, three multipart parts
def test_upload_file_hashed_returns_the_sha256_of_the_file_and_the_bytes_arrive(
    backend: Backend, tmp_path: Path, size: int
) -> None:
    source = tmp_path / "local" / "shard.bin"
    digest = random_file(source, size)
    uri = backend.uri("step-3", "shard.bin")
    assert backend.storage.upload_file_hashed(source, uri) == (size, digest)
    assert backend.storage.size(uri) == size
    target = tmp_path / "restored" / "shard.bin"
    backend.storage.download_file(uri, target)
    assert sha256(target) == digest


def test_sha256_reader_hashes_rewound_and_skipped_bytes_once(tmp_path: Path) -> None:
    """botocore rewinds a body to checksum it and to retry: re-read bytes must not be hashed again,
    and bytes no reader asked for are hashed by `finish()`."""
    data = os.urandom(3 * MiB + 17)
    path = tmp_path / "shard.bin"
    path.write_bytes(data)
    with open(path, "rb") as handle:
        reader = Sha256Reader(handle)
        assert reader.read(1000) == data[:1000]
        assert reader.seek(0) == 0 and reader.tell() == 0
        assert reader.read(5000) == data[:5000]  # a retry from the start, reading further
        reader.seek(2 * MiB)
        assert reader.read(10) == data[2 * MiB:2 * MiB + 10]  # a jump ahead: not hashed out of order
        reader.close()  # s3transfer closes bodies it is done with; the file stays open for finish()
        assert reader.finish() == (len(data), hashlib.sha256(data).hexdigest())


@pytest.mark.slow
def test_s3_large_upload_is_multipart(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_server_env(monkeypatch, s3_server)
    bucket = s3_server.create_bucket()
    source = tmp_path / "shard.bin"
    random_file(source, 20 * MiB)
    S3Storage(options=TEST_S3_OPTIONS).upload_file(source, f"s3://{bucket}/shard.bin")
    etag = s3_server.client().head_object(Bucket=bucket, Key="shard.bin")["ETag"]
    assert etag.strip('"').endswith("-3"), f"expected a 3-part multipart upload, got ETag {etag}"


def test_upload_dir_and_download_dir(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "ckpt"
    digests = {key: random_file(source / key, size)
               for key, size in [("manifest.json", 100), ("rank0/model.pt", 3000), ("rank1/optim/state.pt", 1)]}
    assert backend.storage.upload_dir(source, backend.uri("step-3")) == sorted(digests)
    target = tmp_path / "restored"
    assert backend.storage.download_dir(backend.uri("step-3"), target) == sorted(digests)
    assert {key: sha256(target / key) for key in digests} == digests


def test_download_dir_of_an_empty_prefix_is_an_error(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError, match="no objects under"):
        backend.storage.download_dir(backend.uri("step-404"), tmp_path / "restored")


# ---- listing, existence, deletion --------------------------------------------------------------


def write_tree(backend: Backend) -> None:
    for key in ["step-1/manifest.json", "step-1/rank0/model.pt", "step-10/manifest.json", "latest"]:
        backend.storage.write_bytes(backend.uri(key), key.encode())


def test_list_is_recursive_sorted_and_treats_a_prefix_as_a_directory(backend: Backend) -> None:
    write_tree(backend)
    assert backend.storage.list(backend.uri("step-1")) == ["manifest.json", "rank0/model.pt"]
    assert backend.storage.list(backend.base) == [
        "latest", "step-1/manifest.json", "step-1/rank0/model.pt", "step-10/manifest.json",
    ]
    assert backend.storage.list(backend.uri("step-2")) == []


def test_exists_and_isfile(backend: Backend) -> None:
    write_tree(backend)
    assert backend.storage.isfile(backend.uri("step-1", "manifest.json"))
    assert backend.storage.exists(backend.uri("step-1", "manifest.json"))
    assert backend.storage.exists(backend.uri("step-1"))  # a prefix with objects under it
    assert not backend.storage.isfile(backend.uri("step-1"))
    assert not backend.storage.exists(backend.uri("step-2"))
    assert not backend.storage.isfile(backend.uri("step-2", "manifest.json"))


def test_delete_removes_one_object_and_is_idempotent(backend: Backend) -> None:
    write_tree(backend)
    backend.storage.delete(backend.uri("latest"))
    backend.storage.delete(backend.uri("latest"))
    assert not backend.storage.exists(backend.uri("latest"))
    assert "step-1/manifest.json" in backend.storage.list(backend.base)


def test_delete_prefix_removes_only_that_prefix(backend: Backend) -> None:
    write_tree(backend)
    assert backend.storage.delete_prefix(backend.uri("step-1")) == 2
    assert backend.storage.list(backend.base) == ["latest", "step-10/manifest.json"]
    assert not backend.storage.exists(backend.uri("step-1"))
    assert backend.storage.delete_prefix(backend.uri("step-1")) == 0


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["read_bytes", "size", "download_file", "download_dir"])
def test_missing_object_raises_a_clear_not_found_error(backend: Backend, tmp_path: Path, operation: str) -> None:
    uri = backend.uri("step-9", "manifest.json")
    call = {
        "read_bytes": lambda: backend.storage.read_bytes(uri),
        "size": lambda: backend.storage.size(uri),
        "download_file": lambda: backend.storage.download_file(uri, tmp_path / "out" / "manifest.json"),
        "download_dir": lambda: backend.storage.download_dir(backend.uri("step-9"), tmp_path / "out"),
    }[operation]
    with pytest.raises(ObjectNotFoundError) as caught:
        call()
    assert isinstance(caught.value, FileNotFoundError)
    assert backend.uri("step-9") in str(caught.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_upload_of_a_missing_local_file_names_it(backend: Backend, tmp_path: Path) -> None:
    missing = tmp_path / "never-written.pt"
    for upload in (backend.storage.upload_file, backend.storage.upload_file_hashed):
        with pytest.raises(ObjectNotFoundError, match="never-written.pt"):
            upload(missing, backend.uri("x.pt"))
    assert not backend.storage.exists(backend.uri("x.pt"))


def run_with_file_size_limit(code: str, *args: str, limit: int = 1 * MiB) -> subprocess.CompletedProcess[str]:
    """Run `code` in a child whose files cannot grow past `limit` bytes: writes beyond fail with EFBIG."""
    prelude = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_failed_local_write_leaves_the_old_file_and_no_partial_one(tmp_path: Path) -> None:
    target = tmp_path / "step-1" / "model.pt"
    LocalStorage().write_bytes(str(target), b"old checkpoint")
    child = run_with_file_size_limit("""
        from training.checkpoint.errors import StorageError
        from training.checkpoint.storage import LocalStorage
        try:
            LocalStorage().write_bytes(sys.argv[1], b"x" * (4 << 20))
        except StorageError as e:
            print("StorageError:", e)
            sys.exit(3)
    """, str(target))
    assert child.returncode == 3, child.stdout + child.stderr
    assert str(target) in child.stdout
    assert target.read_bytes() == b"old checkpoint"
    assert leftovers(target.parent) == []


def test_failed_download_leaves_the_old_local_file_and_no_partial_one(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "big.pt"
    random_file(source, 4 * MiB)
    uri = backend.uri("big.pt")
    backend.storage.upload_file(source, uri)
    target = tmp_path / "restored" / "big.pt"
    target.parent.mkdir()
    target.write_bytes(b"old copy")
    child = run_with_file_size_limit("""
        from training.checkpoint.errors import StorageError
        from training.checkpoint.storage import S3Options, storage_for
        options = S3Options(multipart_threshold=1 << 20, multipart_chunksize=1 << 20, max_attempts=2)
        try:
            storage_for(sys.argv[1], s3_options=options).download_file(sys.argv[1], sys.argv[2])
        except StorageError as e:
            print("StorageError:", e)
            sys.exit(3)
    """, uri, str(target))
    assert child.returncode == 3, child.stdout + child.stderr
    assert uri in child.stdout
    assert target.read_bytes() == b"old copy"
    assert leftovers(target.parent) == []


@pytest.mark.slow
def test_s3_errors_are_clear_while_the_server_is_down_and_recover_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import EndpointConnectionError

    with SeaweedS3.running(tmp_path / "seaweedfs") as server:
        use_server_env(monkeypatch, server)
        storage = S3Storage(options=TEST_S3_OPTIONS)
        prefix = f"s3://{server.create_bucket()}/run/step-1"
        uri = join_uri(prefix, "manifest.json")
        storage.write_bytes(uri, b"before")
        source = tmp_path / "manifest.json"
        source.write_bytes(b"lost")
        for bring_down in (server.stop, server.kill):
            bring_down()
            for call in (lambda: storage.read_bytes(uri), lambda: storage.exists(uri),
                         lambda: storage.write_bytes(uri, b"lost"), lambda: storage.upload_file(source, uri),
                         lambda: storage.upload_file_hashed(source, uri),
                         lambda: storage.download_file(uri, tmp_path / "restored" / "manifest.json")):
                with pytest.raises(StorageError) as caught:
                    call()
                assert uri in str(caught.value) and server.endpoint_url in str(caught.value)
                assert "Check that the store is up" in str(caught.value)
                assert isinstance(caught.value.__cause__, EndpointConnectionError)
            assert not (tmp_path / "restored" / "manifest.json").exists()
            server.start()
            assert storage.read_bytes(uri) == b"before"
            storage.write_bytes(join_uri(prefix, f"after-{bring_down.__name__}"), b"ok")
        assert storage.list(prefix) == ["after-kill", "after-stop", "manifest.json"]


@pytest.mark.slow
def test_s3_wrong_secret_is_reported_as_access_denied(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_server_env(monkeypatch, s3_server)
    bucket = s3_server.create_bucket()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StorageError, match="access denied .*check the credentials"):
        S3Storage(options=TEST_S3_OPTIONS).write_bytes(f"s3://{bucket}/k", b"x")


@pytest.mark.slow
def test_s3_missing_credentials_say_how_to_set_them(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_server_env(monkeypatch, s3_server)
    bucket = s3_server.create_bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="Set AWS_ACCESS_KEY_ID"):
        S3Storage(options=TEST_S3_OPTIONS).read_bytes(f"s3://{bucket}/k")


@pytest.mark.slow
def test_s3_missing_bucket_is_named(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_server_env(monkeypatch, s3_server)
    storage = S3Storage(options=TEST_S3_OPTIONS)
    source = tmp_path / "manifest.json"
    source.write_bytes(b"{}")
    for call in (lambda: storage.read_bytes("s3://no-such-bucket-here/run/manifest.json"),
                 lambda: storage.upload_file(source, "s3://no-such-bucket-here/run/manifest.json"),
                 lambda: storage.upload_file_hashed(source, "s3://no-such-bucket-here/run/manifest.json"),
                 lambda: storage.list("s3://no-such-bucket-here/run")):
        with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist; create it"):
            call()


@pytest.mark.slow
def test_explicit_endpoint_wins_over_the_environment(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_server_env(monkeypatch, s3_server)
    bucket = s3_server.create_bucket()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")  # nothing listens there
    storage = storage_for(f"s3://{bucket}", endpoint_url=s3_server.endpoint_url, s3_options=TEST_S3_OPTIONS)
    storage.write_bytes(f"s3://{bucket}/k", b"via explicit endpoint")
    assert storage.read_bytes(f"s3://{bucket}/k") == b"via explicit endpoint"


# ---- URIs and dispatch -------------------------------------------------------------------------


@pytest.mark.parametrize(("uri", "expected"), [
    pytest.param("s3://bucket/run/step-1", ("bucket", "run/step-1"), id="key"),
    pytest.param("s3://bucket/run/", ("bucket", "run"), id="trailing-slash"),
    pytest.param("s3://my.bucket-1", ("my.bucket-1", ""), id="bucket-only"),
])
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", [
    pytest.param("s3://UPPER/key", id="uppercase-bucket"),
    pytest.param("s3://ab/key", id="short-bucket"),
    pytest.param("s3:///key", id="no-bucket"),
    pytest.param("/local/path", id="not-s3"),
])
def test_parse_s3_uri_rejects_and_quotes_bad_uris(uri: str) -> None:
    with pytest.raises(InvalidUriError) as caught:
        parse_s3_uri(uri)
    assert uri in str(caught.value)


@pytest.mark.parametrize(("base", "parts", "expected"), [
    pytest.param("s3://b/run", ("step-5", "manifest.json"), "s3://b/run/step-5/manifest.json", id="s3"),
    pytest.param("s3://bucket/", ("/job/", "x"), "s3://bucket/job/x", id="slashes"),
    pytest.param("file:///ckpt", ("a/b",), "file:///ckpt/a/b", id="file"),
    pytest.param("/ckpt", ("", "a"), "/ckpt/a", id="empty-part"),
    pytest.param("/ckpt", (), "/ckpt", id="no-parts"),
])
def test_join_uri(base: str, parts: tuple[str, ...], expected: str) -> None:
    assert join_uri(base, *parts) == expected


def test_join_uri_refuses_to_leave_the_prefix() -> None:
    with pytest.raises(InvalidUriError, match="'..' would leave the prefix"):
        join_uri("s3://bucket/run", "../other-run")


@pytest.mark.parametrize(("uri", "kind"), [
    pytest.param("/ckpt/run", LocalStorage, id="path"),
    pytest.param("relative/run", LocalStorage, id="relative-path"),
    pytest.param("file:///ckpt/run", LocalStorage, id="file-uri"),
    pytest.param("s3://bucket/run", S3Storage, id="s3"),
])
def test_storage_for_picks_by_scheme(uri: str, kind: type[Storage]) -> None:
    assert type(storage_for(uri)) is kind


@pytest.mark.parametrize("uri", [
    pytest.param("gs://bucket/run", id="unsupported-scheme"),
    pytest.param("file://relative/run", id="relative-file-uri"),
])
def test_unsupported_uris_are_rejected_with_the_value(uri: str) -> None:
    with pytest.raises(InvalidUriError) as caught:
        local_path(uri) if uri.startswith("file") else storage_for(uri)
    assert uri in str(caught.value)


def test_deleting_a_whole_bucket_or_filesystem_is_refused() -> None:
    with pytest.raises(InvalidUriError, match="refusing to delete every object in bucket 'bucket'"):
        S3Storage(endpoint_url="http://127.0.0.1:9").delete_prefix("s3://bucket/")
    with pytest.raises(InvalidUriError, match="filesystem root"):
        LocalStorage().delete_prefix("file:///")


def test_storage_module_imports_neither_boto3_nor_launcher() -> None:
    code = ("import sys, training.checkpoint.storage as s; s.LocalStorage().list('/nonexistent'); "
            "print(sorted(m for m in ('boto3', 'botocore', 'launcher') if m in sys.modules))")
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "[]"
