"""LocalArtifactStore: round trips, size limits that leave nothing behind, unsafe keys."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from precise_mrd.service.storage import (
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    InvalidArtifactKeyError,
    LocalArtifactStore,
)


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_round_trip_and_replace(store: LocalArtifactStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one chunk
    assert store.put_stream("jobs/j1/consensus.bam", io.BytesIO(data)) == len(data)
    assert store.exists("jobs/j1/consensus.bam")
    assert store.size("jobs/j1/consensus.bam") == len(data)
    with store.open("jobs/j1/consensus.bam") as stream:
        assert stream.read() == data
    store.put_stream("jobs/j1/consensus.bam", io.BytesIO(b"new"))
    assert store.path_for("jobs/j1/consensus.bam").read_bytes() == b"new"
    assert _all_files(store.root) == ["jobs/j1/consensus.bam"]


def test_put_file(store: LocalArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "report.html"
    source.write_text("<html></html>")
    assert store.put_file("jobs/j2/report.html", source) == 13
    assert store.path_for("jobs/j2/report.html").read_text() == "<html></html>"


def test_over_the_limit_leaves_nothing(store: LocalArtifactStore) -> None:
    with pytest.raises(ArtifactTooLargeError, match="limit of 1000 bytes"):
        store.put_stream("uploads/u1/reads.bam", io.BytesIO(b"x" * 1001), max_bytes=1000)
    assert not store.exists("uploads/u1/reads.bam")
    assert _all_files(store.root) == []
    # exactly at the limit is fine
    assert store.put_stream("uploads/u1/reads.bam", io.BytesIO(b"x" * 1000), max_bytes=1000)
    # a failed replacement keeps the previous version
    with pytest.raises(ArtifactTooLargeError):
        store.put_stream("uploads/u1/reads.bam", io.BytesIO(b"y" * 5000), max_bytes=1000)
    assert store.path_for("uploads/u1/reads.bam").read_bytes() == b"x" * 1000
    assert _all_files(store.root) == ["uploads/u1/reads.bam"]


class _BrokenStream(io.RawIOBase):
    """Yields some bytes, then fails like a dropped connection."""

    def __init__(self) -> None:
        self.sent = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self.sent:
            self.sent = True
            return b"partial"
        raise ConnectionResetError("client went away")


def test_interrupted_stream_leaves_nothing(store: LocalArtifactStore) -> None:
    with pytest.raises(ConnectionResetError):
        store.put_stream("uploads/u2/reads.bam", _BrokenStream())  # type: ignore[arg-type]
    assert _all_files(store.root) == []


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../escape",
        "jobs/../../etc/passwd",
        "/etc/passwd",
        "jobs//report.html",
        "jobs/./report.html",
        "jobs\\report.html",
        ".hidden",
        "jobs/.partial",
        "jobs/a b.txt",
        "jobs/nul\x00.txt",
        "jobs/",
        "x" * 2000,
        "/".join(["a"] * 20),
    ],
    # NB: printable ids (the NUL byte would be escaped; the 2,000-character key is unreadable)
    ids=lambda key: key.replace("\x00", "<NUL>") if len(key) < 100 else f"{len(key)}-chars",
)
def test_unsafe_keys_are_rejected(store: LocalArtifactStore, key: str) -> None:
    with pytest.raises(InvalidArtifactKeyError):
        store.put_stream(key, io.BytesIO(b"data"))
    with pytest.raises(InvalidArtifactKeyError):
        store.path_for(key)
    assert _all_files(store.root) == []


def test_symlink_in_the_root_cannot_escape(store: LocalArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "jobs").symlink_to(outside)
    with pytest.raises(ArtifactNotFoundError):
        store.path_for("jobs/secret.txt")


def test_missing_artifact(store: LocalArtifactStore) -> None:
    assert not store.exists("jobs/none/report.html")
    with pytest.raises(ArtifactNotFoundError):
        store.open("jobs/none/report.html")
    with pytest.raises(ArtifactNotFoundError):
        store.size("jobs/none/report.html")
    assert store.delete("jobs/none/report.html") is False


def test_delete_prefix(store: LocalArtifactStore) -> None:
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        store.put_stream(f"jobs/j1/{name}", io.BytesIO(b"1"))
    store.put_stream("jobs/j10/a.txt", io.BytesIO(b"1"))
    assert store.delete_prefix("jobs/j1/") == 3
    assert _all_files(store.root) == ["jobs/j10/a.txt"]
    assert store.delete_prefix("jobs/missing/") == 0
    with pytest.raises(InvalidArtifactKeyError):
        store.delete_prefix("jobs/j10")  # a prefix must end with '/'
    with pytest.raises(InvalidArtifactKeyError):
        store.delete_prefix("../")
    assert store.delete("jobs/j10/a.txt") is True


def test_a_verified_local_artifact_is_not_hashed_again_until_it_changes(
    store: LocalArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from precise_mrd.service.storage import integrity

    data = os.urandom(100_000)
    store.put_stream("jobs/j1/consensus.bam", io.BytesIO(data))
    expected = integrity.checksum_stream(io.BytesIO(data)).as_dict()
    hashed: list[Path] = []
    real = integrity.checksum_file

    def counting(path: Path) -> integrity.Checksum:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(integrity, "checksum_file", counting)
    for _ in range(3):
        integrity.verify_stored(store, "jobs/j1/consensus.bam", expected)
    assert len(hashed) == 1  # served three times, read through once
    # a change of the file (same size, new bytes, new modification time) is read and refused
    path = store.local_path("jobs/j1/consensus.bam")
    assert path is not None
    path.write_bytes(bytes(reversed(data)))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(integrity.ArtifactCorruptedError, match=r"consensus\.bam is corrupted"):
        integrity.verify_stored(store, "jobs/j1/consensus.bam", expected)
    assert len(hashed) == 2
    # past the window the unchanged file is read again
    monkeypatch.setattr(integrity, "VERIFIED_FOR_SECONDS", 0.0)
    path.write_bytes(data)
    integrity.verify_stored(store, "jobs/j1/consensus.bam", expected)
    integrity.verify_stored(store, "jobs/j1/consensus.bam", expected)
    assert len(hashed) == 4
