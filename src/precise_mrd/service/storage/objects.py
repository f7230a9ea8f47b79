"""Object-store artifact stores: S3 (AWS, MinIO, SeaweedFS) and Azure Blob through obstore.

obstore (Rust's ``object_store`` crate, the one library that speaks S3, Azure Blob and GCS with
the same calls, streaming multipart uploads, ranged streaming reads and presigned URLs) holds
the connection; this class gives it the :class:`~precise_mrd.service.storage.base.ArtifactStore`
methods. Every byte streams: ``put_stream`` and ``put_file`` upload in 8 MiB parts (an upload
stopped midway, e.g. past ``max_bytes``, is aborted and leaves no object), ``open`` reads in
chunks. Keys live under the URL's prefix (``s3://bucket/prefix`` -> ``prefix/jobs/<id>/...``).

Errors name the store and say what to fix: wrong credentials, a missing bucket or container and
an unreachable endpoint are :class:`ObjectStoreError` with the URL and the variables to check.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import obstore
from obstore.exceptions import NotFoundError, PermissionDeniedError, UnauthenticatedError

from precise_mrd.service.storage.base import (
    CHUNK_BYTES,
    ArtifactNotFoundError,
    ArtifactStoreError,
    ArtifactTooLargeError,
    validate_key,
    validate_prefix,
)

PART_BYTES = 8 * 1024 * 1024


class ObjectStoreError(ArtifactStoreError):
    """The object store refused or could not be reached; the message says what to check."""


class _TooLarge(Exception):
    pass


def _limited(stream: BinaryIO, max_bytes: int | None, counter: list[int]) -> Iterator[bytes]:
    while True:
        chunk = stream.read(CHUNK_BYTES)
        if not chunk:
            return
        counter[0] += len(chunk)
        if max_bytes is not None and counter[0] > max_bytes:
            raise _TooLarge
        yield chunk


class _Reader(io.RawIOBase):
    """A read-only binary stream over an object (chunked ranged reads)."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = bytes(self._reader.read(len(buffer)))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


class ObjectArtifactStore:
    """An :class:`ArtifactStore` over an obstore ``ObjectStore`` (S3 or Azure Blob)."""

    def __init__(self, store: Any, url: str, *, hint: str) -> None:
        self.store = store
        self.url = url
        self._hint = hint

    def __repr__(self) -> str:
        return f"ObjectArtifactStore({self.url!r})"

    def _fail(self, key: str, error: Exception) -> ArtifactStoreError:
        if isinstance(error, NotFoundError | FileNotFoundError):
            return ArtifactNotFoundError(key)
        first = str(error).splitlines()[0][:400]
        if isinstance(error, PermissionDeniedError | UnauthenticatedError):
            return ObjectStoreError(
                f"{self.url}: access to {key!r} refused ({first}); fix: check {self._hint}"
            )
        return ObjectStoreError(f"{self.url}: {key!r}: {first}; fix: check {self._hint}")

    def local_path(self, key: str) -> Path | None:
        """None: objects have no local path (see :meth:`get_file`)."""
        return None

    def put_stream(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> int:
        validate_key(key)
        head = stream.read(PART_BYTES)
        if max_bytes is not None and len(head) > max_bytes:
            raise ArtifactTooLargeError(key, max_bytes)
        if len(head) < PART_BYTES:
            # NB: a small object is one PUT, not a multipart upload of one part
            try:
                obstore.put(self.store, key, head, use_multipart=False)
            except Exception as error:
                raise self._fail(key, error) from None
            return len(head)
        counter = [len(head)]
        parts = itertools.chain([head], _limited(stream, max_bytes, counter))
        try:
            obstore.put(self.store, key, parts, chunk_size=PART_BYTES)
        except _TooLarge:
            raise ArtifactTooLargeError(key, max_bytes or 0) from None
        except Exception as error:
            if isinstance(error.__cause__, _TooLarge) or "_TooLarge" in repr(error):
                raise ArtifactTooLargeError(key, max_bytes or 0) from None
            raise self._fail(key, error) from None
        return counter[0]

    def put_file(self, key: str, path: Path) -> int:
        validate_key(key)
        try:
            obstore.put(self.store, key, Path(path), chunk_size=PART_BYTES)
        except Exception as error:
            raise self._fail(key, error) from None
        return Path(path).stat().st_size

    def open(self, key: str) -> BinaryIO:
        validate_key(key)
        try:
            reader = obstore.open_reader(self.store, key, buffer_size=CHUNK_BYTES)
        except Exception as error:
            raise self._fail(key, error) from None
        return io.BufferedReader(_Reader(reader), buffer_size=CHUNK_BYTES)

    def get_file(self, key: str, path: Path) -> int:
        """Stream the object into a local file; return its size."""
        validate_key(key)
        size = 0
        try:
            result = obstore.get(self.store, key)
            with open(path, "wb") as out:
                for chunk in result.stream(min_chunk_size=CHUNK_BYTES):
                    out.write(chunk)
                    size += len(chunk)
        except Exception as error:
            Path(path).unlink(missing_ok=True)
            raise self._fail(key, error) from None
        return size

    def path_for(self, key: str) -> Path:
        raise ObjectStoreError(f"{self.url}: objects have no local path; use open() or get_file()")

    def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            obstore.head(self.store, key)
        except (NotFoundError, FileNotFoundError):
            return False
        except Exception as error:
            raise self._fail(key, error) from None
        return True

    def size(self, key: str) -> int:
        validate_key(key)
        try:
            return int(obstore.head(self.store, key)["size"])
        except Exception as error:
            raise self._fail(key, error) from None

    def delete(self, key: str) -> bool:
        if not self.exists(key):
            return False
        try:
            obstore.delete(self.store, key)
        except Exception as error:
            raise self._fail(key, error) from None
        return True

    def list_keys(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        try:
            return sorted(
                str(meta["path"]) for batch in obstore.list(self.store, prefix) for meta in batch
            )
        except Exception as error:
            raise self._fail(prefix, error) from None

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        try:
            paths = [meta["path"] for batch in obstore.list(self.store, prefix) for meta in batch]
            for start in range(0, len(paths), 500):
                obstore.delete(self.store, paths[start : start + 500])
        except Exception as error:
            raise self._fail(prefix, error) from None
        return len(paths)

    def presigned_url(self, key: str, *, expires_seconds: int) -> str | None:
        """A URL that downloads the object without credentials, valid ``expires_seconds``."""
        validate_key(key)
        try:
            return str(obstore.sign(self.store, "GET", key, timedelta(seconds=expires_seconds)))
        except Exception:
            return None  # NB: credentials that cannot sign (e.g. a bearer token): stream instead
