"""LocalArtifactStore: artifacts as files under one root directory.

Writes go to a hidden temporary file in the destination directory and are renamed into place
only when complete, so a reader never sees half a file and an interrupted or oversized upload
leaves nothing behind.

>>> import io, tempfile
>>> store = LocalArtifactStore(Path(tempfile.mkdtemp()))
>>> store.put_stream("jobs/j1/report.html", io.BytesIO(b"<html></html>"))
13
>>> with store.open("jobs/j1/report.html") as stream:
...     stream.read()
b'<html></html>'
>>> try:
...     store.put_stream("uploads/big.bam", io.BytesIO(b"x" * 10), max_bytes=4)
... except ArtifactTooLargeError as error:
...     print(error.max_bytes)
4
>>> store.exists("uploads/big.bam"), store.delete_prefix("jobs/j1/")
(False, 1)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from precise_mrd.service.storage.base import (
    CHUNK_BYTES,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    validate_key,
    validate_prefix,
)


class LocalArtifactStore:
    """An :class:`~precise_mrd.service.storage.base.ArtifactStore` in a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        """The file that holds (or would hold) ``key``; always inside :attr:`root`."""
        path = self.root.joinpath(*validate_key(key).split("/"))
        # NB: validate_key already forbids '..'; this also catches a symlink planted in the root.
        if not path.resolve().is_relative_to(self.root):
            raise ArtifactNotFoundError(key)
        return path

    def put_stream(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> int:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
        size = 0
        try:
            with os.fdopen(handle, "wb") as out:
                while chunk := stream.read(CHUNK_BYTES):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise ArtifactTooLargeError(key, max_bytes)
                    out.write(chunk)
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return size

    def put_file(self, key: str, path: Path) -> int:
        with open(path, "rb") as stream:
            return self.put_stream(key, stream)

    def local_path(self, key: str) -> Path | None:
        """The artifact's file (a local store serves it directly)."""
        return self.path_for(key)

    def get_file(self, key: str, path: Path) -> int:
        """Copy the artifact into a local file; return its size."""
        try:
            shutil.copyfile(self.path_for(key), path)
        except (FileNotFoundError, IsADirectoryError):
            raise ArtifactNotFoundError(key) from None
        return Path(path).stat().st_size

    def presigned_url(self, key: str, *, expires_seconds: int) -> str | None:
        """None: a local store has no URLs; the API streams the file."""
        return None

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path_for(key), "rb")  # NB: the caller closes it
        except (FileNotFoundError, IsADirectoryError):
            raise ArtifactNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def size(self, key: str) -> int:
        path = self.path_for(key)
        if not path.is_file():
            raise ArtifactNotFoundError(key)
        return path.stat().st_size

    def delete(self, key: str) -> bool:
        path = self.path_for(key)
        if not path.is_file():
            return False
        path.unlink(missing_ok=True)
        return True

    def list_keys(self, prefix: str) -> list[str]:
        directory = self.root.joinpath(*validate_prefix(prefix)[:-1].split("/"))
        if not directory.is_dir() or directory.is_symlink():
            return []
        return sorted(
            path.relative_to(self.root).as_posix()
            for path in directory.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )

    def delete_prefix(self, prefix: str) -> int:
        directory = self.root.joinpath(*validate_prefix(prefix)[:-1].split("/"))
        if not directory.is_dir() or directory.is_symlink():
            return 0
        count = sum(1 for item in directory.rglob("*") if item.is_file())
        shutil.rmtree(directory, ignore_errors=True)
        return count
