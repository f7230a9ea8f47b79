"""FASTQ writing (and, later, paired reading with a read structure).

Records are written with Phred+33 qualities. A gzip-compressed file is written when the path ends
in ``.gz`` (deterministic: no timestamp or file name in the gzip header).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from types import TracebackType
from typing import IO


def _open_text_for_writing(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        raw = open(path, "wb")  # noqa: SIM115 - closed through the gzip/text wrappers
        compressed = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=4)
        return io.TextIOWrapper(compressed, encoding="ascii")
    return open(path, "w", encoding="ascii")  # noqa: SIM115


class FastqPairWriter:
    """Writes R1/R2 records in step. Use as a context manager."""

    def __init__(self, r1_path: Path, r2_path: Path) -> None:
        self._r1 = _open_text_for_writing(r1_path)
        self._r2 = _open_text_for_writing(r2_path)

    def write(self, name: str, seq1: str, qual1: str, seq2: str, qual2: str) -> None:
        """Write one read pair. ``qual`` strings are Phred+33 encoded."""
        self._r1.write(f"@{name}/1\n{seq1}\n+\n{qual1}\n")
        self._r2.write(f"@{name}/2\n{seq2}\n+\n{qual2}\n")

    def close(self) -> None:
        self._r1.close()
        self._r2.close()

    def __enter__(self) -> FastqPairWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
