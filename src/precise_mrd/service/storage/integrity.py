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


def verify_stored(store: ArtifactStore, key: str, expected: Mapping[str, Any] | None) -> None:
    """Read the stored artifact through and compare it with ``expected``."""
    if not expected:
        return
    recorded = Checksum.from_mapping(expected)
    local = store.local_path(key)
    if local is not None:
        verify_file(key, local, expected)
        return
    with store.open(key) as stream:
        actual = checksum_stream(stream)
    if actual != recorded:
        raise ArtifactCorruptedError(key, recorded, actual)
