"""The artifact store interface: named byte blobs under safe, slash-separated keys.

Keys look like ``jobs/<job_id>/report.html``: one to sixteen segments of letters, digits, ``.``,
``_`` and ``-``, none empty, none ``.``/``..``, none starting with a dot (dot names are reserved
for a store's temporary files), no absolute paths or backslashes. Anything else is rejected with
:class:`InvalidArtifactKeyError` before it can reach a file system or a bucket, so a key can never
escape the store.

>>> validate_key("jobs/abc/report.html")
'jobs/abc/report.html'
>>> try:
...     validate_key("jobs/../../etc/passwd")
... except InvalidArtifactKeyError as error:
...     print(error.problem)
segment '..' is not allowed
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO, Protocol

_SEGMENT = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,199}")
MAX_KEY_LENGTH = 1024
MAX_SEGMENTS = 16
#: bytes read per chunk when streaming
CHUNK_BYTES = 1024 * 1024


class ArtifactStoreError(Exception):
    """Base of the store's errors."""


class InvalidArtifactKeyError(ArtifactStoreError, ValueError):
    """A key that could escape the store or is not portable across backends."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(
            f"invalid artifact key {key!r}: {problem}; use letters, digits, '.', '_' and '-' "
            "in '/'-separated segments"
        )


class ArtifactTooLargeError(ArtifactStoreError):
    """A stream was longer than the limit; nothing was stored."""

    def __init__(self, key: str, max_bytes: int) -> None:
        self.key = key
        self.max_bytes = max_bytes
        super().__init__(
            f"{key}: larger than the limit of {max_bytes} bytes; nothing was stored "
            "(raise PRECISE_MRD_MAX_UPLOAD_BYTES or send a smaller file)"
        )


class ArtifactNotFoundError(ArtifactStoreError, LookupError):
    """No artifact under that key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no artifact {key!r}")


def validate_key(key: str) -> str:
    """Return ``key`` if it is safe, else raise :class:`InvalidArtifactKeyError`."""
    if not isinstance(key, str) or not key:
        raise InvalidArtifactKeyError(str(key), "empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArtifactKeyError(key[:64] + "...", f"longer than {MAX_KEY_LENGTH} characters")
    if "\\" in key or "\x00" in key:
        raise InvalidArtifactKeyError(key, "backslashes and NUL are not allowed")
    if key.startswith("/"):
        raise InvalidArtifactKeyError(key, "absolute keys are not allowed")
    segments = key.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise InvalidArtifactKeyError(key, f"more than {MAX_SEGMENTS} segments")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidArtifactKeyError(key, f"segment {segment!r} is not allowed")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidArtifactKeyError(key, f"segment {segment!r} has disallowed characters")
    return key


def validate_prefix(prefix: str) -> str:
    """A key prefix ending in ``/`` (e.g. ``jobs/abc/``); the part before it must be a safe key."""
    if not prefix.endswith("/"):
        raise InvalidArtifactKeyError(prefix, "a prefix must end with '/'")
    validate_key(prefix[:-1])
    return prefix


class ArtifactStore(Protocol):
    """Where uploads and job outputs live. Implementations: :class:`LocalArtifactStore` (a
    directory), :class:`~precise_mrd.service.storage.objects.ObjectArtifactStore` (S3, Azure
    Blob) and :class:`~precise_mrd.service.storage.gcs.GcsArtifactStore` (Cloud Storage); see
    :func:`~precise_mrd.service.storage.factory.open_store`."""

    def put_stream(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> int:
        """Store the stream under ``key`` (replacing it atomically); return its size. Past
        ``max_bytes`` raise :class:`ArtifactTooLargeError` and leave nothing behind."""
        ...

    def put_file(self, key: str, path: Path) -> int:
        """Store a local file under ``key``; return its size."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Open the artifact for reading (:class:`ArtifactNotFoundError` if absent)."""
        ...

    def path_for(self, key: str) -> Path:
        """A local file path holding the artifact (local stores only)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The artifact's local file when the store is a directory, else None."""
        ...

    def get_file(self, key: str, path: Path) -> int:
        """Stream the artifact into the local file ``path``; return its size."""
        ...

    def presigned_url(self, key: str, *, expires_seconds: int) -> str | None:
        """A URL downloading the artifact without credentials, or None (stream it instead)."""
        ...

    def exists(self, key: str) -> bool:
        """True when an artifact is stored under ``key``."""
        ...

    def size(self, key: str) -> int:
        """The artifact's size in bytes."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (ending in ``/``), sorted."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every artifact whose key starts with ``prefix`` (ending in ``/``); return
        how many were deleted."""
        ...

    def delete(self, key: str) -> bool:
        """Delete one artifact; True if it existed."""
        ...
