"""One storage layer for local paths and ``s3://bucket/key`` URIs.

S3 settings come from the standard AWS environment, so the same code talks to AWS S3, MinIO or any
S3-compatible server: ``AWS_ENDPOINT_URL`` (empty for AWS itself), ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, and credentials from the usual chain (environment, config files, instance
profile). Transient errors are retried with backoff (``S3_MAX_ATTEMPTS``); permanent ones (no such
bucket, access denied) fail at once as ``StorageError`` naming the URI.

Writes are atomic: a reader sees a whole object or none. ``create_only`` fails with ``AlreadyExists``
if the object is there: an exclusive link locally, a conditional put (``If-None-Match: *``) on S3.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import boto3
import botocore.config
import botocore.exceptions
import pyarrow as pa
import pyarrow.fs as pafs

from .errors import PipelineError

S3_MAX_ATTEMPTS = int(os.environ.get("CPL_S3_MAX_ATTEMPTS", "5"))
_STALE_LOCK_SECONDS = 10.0


class StorageError(PipelineError, RuntimeError):
    """A storage operation failed; the message starts with the URI."""


class AlreadyExists(StorageError):
    """A create-only write found the object already there."""


@dataclass(frozen=True)
class FileInfo:
    uri: str
    size: int


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI or a local path."""
    if is_s3(uri):
        return posixpath.join(uri.rstrip("/"), *parts)
    return str(Path(uri).joinpath(*parts))


def absolute(uri: str) -> str:
    """``uri`` unchanged for s3://, else the absolute local path (worker processes have other cwds)."""
    return uri if is_s3(uri) else str(Path(uri).resolve())


def relative(uri: str, root: str) -> str:
    """``uri``'s path below ``root`` (both URIs, or local paths in any form); ``uri`` itself if not below."""
    if not is_s3(root):
        root, uri = str(Path(root).resolve()), str(Path(uri).resolve())
    root = root.rstrip("/") + "/"
    return uri[len(root):] if uri.startswith(root) else uri


def _bucket_key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@functools.lru_cache(maxsize=4)
def _client(endpoint: str | None, region: str):
    config = botocore.config.Config(retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
                                    connect_timeout=10, read_timeout=60)
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def s3_client():
    """A boto3 S3 client for the current environment's endpoint and region."""
    return _client(_endpoint(), _region())


@functools.lru_cache(maxsize=4)
def _s3_filesystem(endpoint: str | None, region: str) -> pafs.S3FileSystem:
    options = {"region": region, "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS)}
    if endpoint:
        parsed = urlparse(endpoint)
        options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
    return pafs.S3FileSystem(**options)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path within it, as Ray Data and pyarrow take them."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        return _s3_filesystem(_endpoint(), _region()), f"{bucket}/{key}".rstrip("/")
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def uri_of(path: str, like: str) -> str:
    """The URI of ``path``, a path inside the filesystem of ``like`` (the inverse of ``filesystem``)."""
    return f"s3://{path}" if is_s3(like) else path


def _translate(uri: str, err: Exception) -> StorageError:
    if isinstance(err, botocore.exceptions.ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        return StorageError(f"{uri}: {code or 'error'}: {err.response.get('Error', {}).get('Message', err)}")
    if isinstance(err, botocore.exceptions.EndpointConnectionError):
        return StorageError(f"{uri}: cannot reach the S3 endpoint {_endpoint() or '(AWS)'}")
    return StorageError(f"{uri}: {err}")


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except (OSError, botocore.exceptions.BotoCoreError) as err:
        raise _translate(uri, err) from None


@contextlib.contextmanager
def open_input_file(uri: str) -> Iterator[pa.NativeFile]:
    """A seekable reader of ``uri`` (reads only the ranges asked for, on S3 too)."""
    fs, path = filesystem(uri)
    try:
        with fs.open_input_file(path) as stream:
            yield stream
    except (OSError, botocore.exceptions.BotoCoreError) as err:
        raise _translate(uri, err) from None


def write_bytes(uri: str, data: bytes | memoryview) -> None:
    """Write ``data`` atomically, replacing any object at ``uri``."""
    _put(uri, data, exclusive=False)


def create_only(uri: str, data: bytes) -> None:
    """Write ``data`` at ``uri`` only if nothing is there; raise ``AlreadyExists`` otherwise."""
    _put(uri, data, exclusive=True)


_PRECONDITION_FAILED = ("PreconditionFailed", "ConditionalRequestConflict")


def _put(uri: str, data: bytes | memoryview, exclusive: bool) -> None:
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        condition = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            # Single-object puts are atomic. bytes() copies a memoryview only (botocore wants bytes).
            s3_client().put_object(Bucket=bucket, Key=key, Body=bytes(data), **condition)
        except botocore.exceptions.ClientError as err:
            if exclusive and err.response.get("Error", {}).get("Code") in _PRECONDITION_FAILED:
                raise AlreadyExists(f"{uri}: already exists") from None
            raise _translate(uri, err) from None
        except botocore.exceptions.BotoCoreError as err:
            raise _translate(uri, err) from None
        return
    path = Path(uri)
    partial = _partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        try:
            # Both are atomic, so no reader sees a partial file; link also fails if the name exists.
            (os.link if exclusive else os.replace)(partial, path)
        except FileExistsError:
            raise AlreadyExists(f"{uri}: already exists") from None
    except OSError as err:
        raise _translate(uri, err) from None
    finally:
        _remove_quietly(partial)


def _remove_quietly(path: Path) -> None:
    """Remove a temporary file; a failure here must not hide the error being raised."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as err:
        raise _translate(uri, err) from None


def is_file(uri: str) -> bool:
    """Whether ``uri`` is a file (an object, on S3), not a folder or prefix."""
    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path).type == pafs.FileType.File
    except OSError as err:
        raise _translate(uri, err) from None


def list_files(uri: str, suffixes: tuple[str, ...] | None = None) -> list[FileInfo]:
    """Files under ``uri`` (recursively), sorted by URI; hidden files and directory markers skipped."""
    fs, base = filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as err:
        raise _translate(uri, err) from None
    files = []
    for info in infos:
        if info.type != pafs.FileType.File or info.base_name.startswith("."):
            continue
        if suffixes is not None and not info.base_name.lower().endswith(suffixes):
            continue
        files.append(FileInfo(uri_of(info.path, uri), info.size))
    return sorted(files, key=lambda f: f.uri)


def delete_tree(uri: str) -> None:
    """Delete everything under ``uri``; a missing ``uri`` is not an error."""
    fs, path = filesystem(uri)
    try:
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)
    except OSError as err:
        raise _translate(uri, err) from None


def check_readable(uri: str) -> None:
    """Fail fast, naming the URI, if ``uri``'s bucket or folder cannot be read."""
    if is_s3(uri):
        _check_bucket(uri)
    elif not Path(uri).exists():
        raise StorageError(f"{uri}: no such file or directory")


def check_writable(uri: str) -> None:
    """Fail fast, naming the URI, if nothing can be written under ``uri`` (writes and removes a probe)."""
    if is_s3(uri):
        _check_bucket(uri)
    probe = join(uri, f".write-probe-{uuid.uuid4().hex[:8]}")
    write_bytes(probe, b"")
    fs, path = filesystem(probe)
    try:
        fs.delete_file(path)
    except OSError as err:
        raise _translate(probe, err) from None


def _check_bucket(uri: str) -> None:
    bucket, _ = _bucket_key(uri)
    try:
        s3_client().head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        reason = {"404": "no such bucket", "NoSuchBucket": "no such bucket", "403": "access denied"}.get(code, code)
        raise StorageError(f"{uri}: {reason}") from None
    except botocore.exceptions.BotoCoreError as err:
        raise _translate(uri, err) from None


def advance_pointer(uri: str, value: str, timeout: float = 30.0) -> bool:
    """Set the small text object at ``uri`` to ``value`` unless it already holds a value >= ``value``.

    A compare-and-swap, so concurrent writers never move the pointer backwards or lose an update:
    conditional puts (``If-Match`` on the ETag read, ``If-None-Match`` when absent) on S3, an
    exclusive lock file locally. Returns whether the pointer moved.
    """
    deadline = time.monotonic() + timeout
    while True:
        moved = _try_advance_s3(uri, value) if is_s3(uri) else _try_advance_local(uri, value)
        if moved is not None:
            return moved
        if time.monotonic() > deadline:
            raise StorageError(f"{uri}: could not update the pointer within {timeout:.0f}s (contended)")
        time.sleep(0.05)


def _try_advance_s3(uri: str, value: str) -> bool | None:
    bucket, key = _bucket_key(uri)
    client = s3_client()
    condition: dict[str, str]
    try:
        current = client.get_object(Bucket=bucket, Key=key)
        if current["Body"].read().decode().strip() >= value:
            return False
        condition = {"IfMatch": current["ETag"]}
    except botocore.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise _translate(uri, err) from None
        condition = {"IfNoneMatch": "*"}
    try:
        client.put_object(Bucket=bucket, Key=key, Body=value.encode(), **condition)
        return True
    except botocore.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") in _PRECONDITION_FAILED:
            return None  # someone else moved it first: read again
        raise _translate(uri, err) from None


def _try_advance_local(uri: str, value: str) -> bool | None:
    path = Path(uri)
    lock = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        # The lock is held for milliseconds; an old one was left by a killed process.
        with contextlib.suppress(OSError):
            if time.time() - lock.stat().st_mtime > _STALE_LOCK_SECONDS:
                lock.unlink()
        return None
    except OSError as err:
        raise _translate(uri, err) from None
    try:
        current = path.read_text().strip() if path.exists() else ""
        if current >= value:
            return False
        write_bytes(uri, value.encode())
        return True
    finally:
        os.close(descriptor)
        lock.unlink(missing_ok=True)
