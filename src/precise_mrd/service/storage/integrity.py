"""SHA-256 and size of every stored file, recorded when it is written and checked when it is read.

Uploads are hashed while they stream into the store (the job's spec keeps ``checksums``); a job's
outputs are hashed by the worker before it stores them (the job row keeps ``checksums``). A worker
checks each input it copies out of the store, and the API checks an artifact before it serves it:
a corrupted or truncated object is :class:`ArtifactCorruptedError` naming the key and both
digests, never a silent wrong result.

>>> import io
>>> reader = HashingReader(io.BytesIO(b"abc"))
>>> _ = reader.read()
>>> reader.checksum().sha256[:12], reader.checksum().size
('ba7816bf8f01', 3)
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from precise_mrd.service.storage.base import CHUNK_BYTES, ArtifactStore, ArtifactStoreError


@dataclass(frozen=True)
class Checksum:
    sha256: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> Checksum:
        return cls(sha256=str(value["sha256"]), size=int(value["size"]))


class ArtifactCorruptedError(ArtifactStoreError):
    """A stored file differs from what was recorded when it was written."""

    def __init__(self, key: str, expected: Checksum, actual: Checksum) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{key} is corrupted: recorded sha256 {expected.sha256} ({expected.size} bytes), "
            f"stored sha256 {actual.sha256} ({actual.size} bytes)"
        )


class HashingReader:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self._size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._digest.update(data)
        self._size += len(data)
        return data

    def checksum(self) -> Checksum:
        return Checksum(self._digest.hexdigest(), self._size)


def checksum_stream(stream: BinaryIO) -> Checksum:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return Checksum(digest.hexdigest(), size)


def checksum_file(path: Path) -> Checksum:
    with open(path, "rb") as stream:
        return checksum_stream(stream)


def verify_file(key: str, path: Path, expected: Mapping[str, Any] | None) -> None:
    """Raise :class:`ArtifactCorruptedError` when ``path`` differs from ``expected``."""
    if not expected:
        return
    recorded = Checksum.from_mapping(expected)
    actual = checksum_file(path)
    if actual != recorded:
        raise ArtifactCorruptedError(key, recorded, actual)


#: a local file that passed its check is not hashed again for this long while it stays the
#: same file (size, modification time and inode unchanged)
VERIFIED_FOR_SECONDS: float = 3600.0
_VERIFIED_MAX = 4096


class _VerifiedFiles:
    """Local files that passed :func:`verify_file` lately, by key and ``stat`` identity, so that
    serving a large artifact again does not hash it again (one process; thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, str, int, int, int], float] = OrderedDict()

    @staticmethod
    def _identity(key: str, path: Path, sha256: str) -> tuple[str, str, int, int, int]:
        info = path.stat()
        return (key, sha256, info.st_size, info.st_mtime_ns, info.st_ino)

    def verify(self, key: str, path: Path, expected: Mapping[str, Any]) -> None:
        identity = self._identity(key, path, str(expected["sha256"]))
        now = time.monotonic()
        with self._lock:
            verified_at = self._seen.get(identity)
        if verified_at is not None and now - verified_at < VERIFIED_FOR_SECONDS:
            return
        verify_file(key, path, expected)
        with self._lock:
            self._seen[identity] = now
            self._seen.move_to_end(identity)
            while len(self._seen) > _VERIFIED_MAX:
                self._seen.popitem(last=False)


_verified_files = _VerifiedFiles()


def verify_stored(store: ArtifactStore, key: str, expected: Mapping[str, Any] | None) -> None:
    """Compare the stored artifact with ``expected``: an object is read through; a local file is
    hashed unless it passed in the last :data:`VERIFIED_FOR_SECONDS` and has not changed since
    (same size, modification time and inode). NB: a bit flip in place that keeps all three is
    caught only once that time has passed."""
    if not expected:
        return
    recorded = Checksum.from_mapping(expected)
    local = store.local_path(key)
    if local is not None:
        _verified_files.verify(key, local, expected)
        return
    with store.open(key) as stream:
        actual = checksum_stream(stream)
    if actual != recorded:
        raise ArtifactCorruptedError(key, recorded, actual)
