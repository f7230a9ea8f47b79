"""Uploads: safe names, streaming into the store with a size limit, sniffing and validation.

A submission's files pass three gates before a job is queued:

1. **the name** the client sent is checked: path components are stripped (``C:\\x\\reads.bam`` ->
   ``reads.bam``) and a name that tries to climb out (``../x``) or holds control characters is
   refused. The file is then stored under a canonical key the server chooses
   (``uploads/<id>/reads.bam``), never under the client's name.
2. **the size**: bytes are streamed into the store and the upload stops with 413 past
   ``PRECISE_MRD_MAX_UPLOAD_BYTES``, leaving nothing behind.
3. **the content**: the first bytes are sniffed (BAM: BGZF whose first block inflates to
   ``BAM\\1``; FASTQ: ``@``; FASTA: ``>``; VCF: ``##fileformat=VCF``; a table with CHROM POS REF
   ALT; BED: three tab-separated columns with integer start and end), and then the file is opened
   with the pipeline's own readers (BAM header and sort order, FASTA index, the variants against
   the reference, the BED against the reference, the first FASTQ records), so that a job never
   fails an hour later on something a client could have been told now.

Sniffing works on bytes and is pure:

>>> sniff("reads", b"@r1\\nACGT\\n+\\nIIII\\n")
'fastq'
>>> try:
...     sniff("reads", b"hello")
... except UploadInvalidError as error:
...     print(error.message)
reads: is neither a BAM nor a FASTQ file (it starts with 'hello')
>>> safe_file_name("reads", "C:\\\\data\\\\tumour.bam")
'tumour.bam'
"""

from __future__ import annotations

import importlib
import itertools
import re
import shutil
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from precise_mrd.core.errors import InputError
from precise_mrd.service.errors import PayloadTooLargeError, UploadInvalidError, send_error
from precise_mrd.service.jobs.worker import DEFAULT_READ_STRUCTURES
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import ArtifactStore, ArtifactTooLargeError, LocalArtifactStore
from precise_mrd.service.storage.integrity import HashingReader

#: form fields that take a file, in the order they are processed
UPLOAD_FIELDS = ("reads", "reads_r2", "reference", "variants", "targets")
SNIFF_BYTES = 64 * 1024
_GZIP = b"\x1f\x8b"
_BGZF = b"\x1f\x8b\x08\x04"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_N_FASTQ_RECORDS_CHECKED = 1000

_FIXES = {
    "reads": "upload a coordinate-sorted BAM with UMIs, or FASTQ R1 as reads and R2 as reads_r2",
    "reads_r2": "upload the R2 FASTQ (plain or gzip) that pairs with reads",
    "reference": "upload the reference FASTA (plain or bgzip) the reads were aligned to",
    "variants": "upload a VCF or a TSV/CSV with a header row CHROM POS REF ALT [AF]",
    "targets": "upload a BED file (chrom, 0-based start, end; tab-separated)",
}


def safe_file_name(field: str, name: str | None) -> str:
    """The client's file name without directories; refuse traversal and control characters."""
    if not name:
        return field
    if _CONTROL.search(name):
        raise UploadInvalidError(
            f"{field}: the file name contains control characters",
            field=field,
            fix="rename the file using letters, digits, '.', '_' and '-'",
        )
    parts = re.split(r"[\\/]+", name)
    if any(part == ".." for part in parts):
        raise UploadInvalidError(
            f"{field}: the file name {name!r} tries to leave its directory ('..')",
            field=field,
            fix="send the bare file name, e.g. reads.bam",
        )
    base = parts[-1].strip()
    if base in ("", "."):
        raise UploadInvalidError(
            f"{field}: the file name {name!r} has no file part",
            field=field,
            fix="send the bare file name, e.g. reads.bam",
        )
    return base


def _inflate_head(head: bytes) -> bytes | None:
    """The start of the first gzip member's content (None when it does not inflate)."""
    try:
        return zlib.decompressobj(wbits=31).decompress(head, SNIFF_BYTES)
    except zlib.error:
        return None


def _printable_start(data: bytes) -> str:
    return data[:16].decode("latin-1").encode("unicode_escape").decode("ascii")


def sniff(field: str, head: bytes) -> str:
    """The format of an upload from its first bytes; :class:`UploadInvalidError` if wrong.

    Returns one of ``bam``, ``fastq``, ``fastq.gz``, ``fasta``, ``fasta.gz``, ``vcf``,
    ``vcf.gz``, ``tsv`` (a variants table) and ``bed``.
    """
    if not head:
        raise UploadInvalidError(f"{field}: the file is empty", field=field, fix=_FIXES[field])
    compressed = head.startswith(_GZIP)
    text = head
    if compressed:
        inflated = _inflate_head(head)
        if inflated is None:
            raise UploadInvalidError(
                f"{field}: the file starts like gzip but does not decompress",
                field=field,
                fix="re-copy the file; it may be truncated or corrupt",
            )
        text = inflated
    suffix = ".gz" if compressed else ""
    first = text.lstrip()[:1]
    problem: str
    if field == "reads":
        if text.startswith(b"BAM\x01"):
            if not head.startswith(_BGZF):
                problem = "is a gzip-compressed BAM stream but not BGZF (not a valid BAM)"
            else:
                return "bam"
        elif re.match(rb"@(HD|SQ|RG|PG|CO)\t", text.lstrip()):
            problem = "is SAM text, not BAM (a SAM header line starts it)"
            raise UploadInvalidError(
                f"{field}: {problem}",
                field=field,
                fix="convert it with `samtools view -b -o reads.bam in.sam`",
            )
        elif first == b"@":
            return "fastq" + suffix
        else:
            problem = (
                f"is neither a BAM nor a FASTQ file (it starts with {_printable_start(text)!r})"
            )
        raise UploadInvalidError(f"{field}: {problem}", field=field, fix=_FIXES[field])
    if field == "reads_r2":
        if first == b"@":
            return "fastq" + suffix
        problem = f"is not a FASTQ file (it starts with {_printable_start(text)!r})"
    elif field == "reference":
        if first == b">":
            return "fasta" + suffix
        problem = f"is not a FASTA file (expected '>', it starts with {_printable_start(text)!r})"
    elif field == "variants":
        if text.startswith(b"##fileformat=VCF"):
            return "vcf" + suffix
        header = text.split(b"\n", 1)[0].decode("latin-1").strip()
        names = {name.strip().lstrip("#").upper() for name in re.split(r"[\t,]", header)}
        if {"CHROM", "POS", "REF", "ALT"} <= names and not compressed:
            return "tsv"
        problem = (
            "is neither a VCF (no '##fileformat=VCF' line) nor a table whose header names "
            f"CHROM, POS, REF and ALT (first line {header[:60]!r})"
        )
    elif field == "targets":
        lines = [
            line
            for line in text.decode("latin-1").splitlines()[:20]
            if line.strip() and not line.startswith(("#", "track", "browser"))
        ]
        columns = lines[0].split("\t") if lines else []
        if not compressed and len(columns) >= 3 and columns[1].isdigit() and columns[2].isdigit():
            return "bed"
        problem = (
            "is not a BED file (expected tab-separated chrom, start, end; "
            f"first line {lines[0][:60] if lines else ''!r})"
        )
    else:
        raise ValueError(f"unknown upload field {field!r}")
    raise UploadInvalidError(f"{field}: {problem}", field=field, fix=_FIXES[field])


#: field -> canonical file name for each sniffed format
_CANONICAL = {
    ("reads", "bam"): "reads.bam",
    ("reads", "fastq"): "reads_R1.fastq",
    ("reads", "fastq.gz"): "reads_R1.fastq.gz",
    ("reads_r2", "fastq"): "reads_R2.fastq",
    ("reads_r2", "fastq.gz"): "reads_R2.fastq.gz",
    ("reference", "fasta"): "reference.fa",
    ("reference", "fasta.gz"): "reference.fa.gz",
    ("variants", "vcf"): "variants.vcf",
    ("variants", "vcf.gz"): "variants.vcf.gz",
    ("variants", "tsv"): "variants.tsv",
    ("targets", "bed"): "targets.bed",
}


@dataclass(frozen=True)
class StoredUpload:
    """One upload in the store: its form field, sniffed format, key and the client's name."""

    field: str
    kind: str
    key: str
    client_name: str
    size: int
    sha256: str = ""


class _Prefixed:
    """A read-only stream that first yields ``head`` then the rest of ``stream``."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._stream.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._stream.read(size)


def store_upload(
    store: ArtifactStore,
    *,
    field: str,
    client_name: str | None,
    stream: BinaryIO,
    prefix: str,
    max_bytes: int,
) -> StoredUpload:
    """Check the name, sniff the head, then stream the file into ``prefix + canonical name``."""
    name = safe_file_name(field, client_name)
    head = stream.read(SNIFF_BYTES)
    kind = sniff(field, head)
    key = prefix + _CANONICAL[(field, kind)]
    reader = HashingReader(_Prefixed(head, stream))  # type: ignore[arg-type]
    try:
        size = store.put_stream(key, reader, max_bytes=max_bytes)  # type: ignore[arg-type]
    except ArtifactTooLargeError:
        raise PayloadTooLargeError(
            f"{field}: {name} is larger than the upload limit of {max_bytes} bytes",
            field=field,
            fix="send a smaller file, or raise PRECISE_MRD_MAX_UPLOAD_BYTES on the server",
        ) from None
    return StoredUpload(
        field=field,
        kind=kind,
        key=key,
        client_name=name,
        size=size,
        sha256=reader.checksum().sha256,
    )


def check_combination(uploads: Mapping[str, StoredUpload]) -> None:
    """Which files go together: reads need reference and variants; FASTQ needs both mates."""
    reads = uploads.get("reads")
    if reads is None:
        extra = sorted(uploads)
        if extra:
            raise UploadInvalidError(
                f"{extra[0]} was uploaded without reads; a job without reads simulates its own "
                "sample (reference and variants included) from the seed",
                field=extra[0],
                fix="upload reads too, or send no files to run a simulated sample",
            )
        return
    for needed in ("reference", "variants"):
        if needed not in uploads:
            raise UploadInvalidError(
                f"reads were uploaded without {needed}",
                field=needed,
                fix=_FIXES[needed],
            )
    is_fastq = reads.kind.startswith("fastq")
    if is_fastq and "reads_r2" not in uploads:
        raise UploadInvalidError(
            "reads is a FASTQ file but reads_r2 (the R2 mates) is missing",
            field="reads_r2",
            fix=_FIXES["reads_r2"],
        )
    if not is_fastq and "reads_r2" in uploads:
        raise UploadInvalidError(
            "reads_r2 is only for FASTQ input, but reads is a BAM",
            field="reads_r2",
            fix="omit reads_r2 when reads is a BAM",
        )


def check_read_structures(uploads: Mapping[str, StoredUpload], read_structures: str | None) -> None:
    """``read_structures`` must parse, and only comes with FASTQ reads."""
    from precise_mrd.core.errors import ConfigError
    from precise_mrd.pipeline.run import parse_read_structures

    if read_structures is None:
        return
    reads = uploads.get("reads")
    if reads is None or not reads.kind.startswith("fastq"):
        raise UploadInvalidError(
            "read_structures applies to FASTQ reads only",
            field="read_structures",
            fix="omit read_structures, or upload FASTQ reads (R1 as reads, R2 as reads_r2)",
        )
    try:
        parse_read_structures(read_structures)
    except (ConfigError, ValueError) as error:
        problem = getattr(error, "problem", str(error))
        raise UploadInvalidError(
            f"read_structures: {problem}",
            field="read_structures",
            fix='give two structures separated by a space, e.g. "8M142T 8M142T"',
        ) from None


#: what :func:`validate_uploads` imports on first use (numba, pysam and SciPy behind them)
READER_MODULES = (
    "precise_mrd.io.bam",
    "precise_mrd.io.bed",
    "precise_mrd.io.fasta",
    "precise_mrd.io.fastq",
    "precise_mrd.io.vcf",
    "precise_mrd.pipeline.run",
)


def import_readers() -> None:
    """Import :data:`READER_MODULES` now. A server process does it before it freezes its
    start-up heap (:func:`~precise_mrd.service.serving.freeze_startup_heap`): imported by the
    first submission instead, their objects stay in the collector's reach and each full
    collection under load takes ~14 ms instead of ~3 ms (docs/performance.md)."""
    for name in READER_MODULES:
        importlib.import_module(name)


def validate_uploads(
    store: ArtifactStore, uploads: Mapping[str, StoredUpload], *, read_structures: str | None
) -> None:
    """Open every upload with the pipeline's readers; errors name the form field and client file."""
    from precise_mrd.io.bam import open_bam
    from precise_mrd.io.bed import read_bed
    from precise_mrd.io.fasta import open_reference
    from precise_mrd.io.fastq import read_fastq_pairs
    from precise_mrd.io.vcf import read_variants
    from precise_mrd.pipeline.run import parse_read_structures

    def fail(upload: StoredUpload, error: InputError) -> UploadInvalidError:
        return UploadInvalidError(
            f"{upload.field} ({upload.client_name}): {error.problem}",
            field=upload.field,
            fix=error.fix,
        )

    reads = uploads.get("reads")
    if reads is None:
        return
    current = reads
    try:
        if reads.kind == "bam":
            open_bam(store.path_for(reads.key)).close()
        else:
            structures = parse_read_structures(read_structures) if read_structures else None
            pairs = read_fastq_pairs(
                store.path_for(reads.key),
                store.path_for(uploads["reads_r2"].key),
                read_structures=structures,
            )
            n_checked = sum(1 for _ in itertools.islice(pairs, _N_FASTQ_RECORDS_CHECKED))
            if n_checked == 0:
                raise UploadInvalidError(
                    f"reads ({reads.client_name}): the FASTQ holds no records",
                    field="reads",
                    fix=_FIXES["reads"],
                )
        current = uploads["reference"]
        with open_reference(store.path_for(current.key)) as reference:
            current = uploads["variants"]
            read_variants(store.path_for(current.key), reference)
            if "targets" in uploads:
                current = uploads["targets"]
                read_bed(store.path_for(current.key), reference)
    except InputError as error:
        raise fail(current, error) from None


def store_uploads(
    store: ArtifactStore,
    settings: Settings,
    files: Mapping[str, tuple[str | None, BinaryIO]],
    *,
    prefix: str,
    read_structures: str | None,
) -> dict[str, StoredUpload]:
    """Stream, sniff and validate a submission's files (input kind -> (client's file name,
    stream)), then keep them under ``prefix``. An object store gets them only once they are
    valid: they are checked in a local staging directory first (the readers need files) and then
    streamed to the store; nothing is left on any failure."""
    staged = store.local_path(prefix + "probe") is None
    staging_root = settings.work_dir / "staging" / uuid.uuid4().hex
    target: ArtifactStore = LocalArtifactStore(staging_root) if staged else store
    uploads: dict[str, StoredUpload] = {}
    try:
        for field in UPLOAD_FIELDS:
            if field not in files:
                continue
            client_name, stream = files[field]
            uploads[field] = store_upload(
                target,
                field=field,
                client_name=client_name,
                stream=stream,
                prefix=prefix,
                max_bytes=settings.max_upload_bytes,
            )
        check_combination(uploads)
        check_read_structures(uploads, read_structures)
        validate_uploads(
            target, uploads, read_structures=read_structures or DEFAULT_READ_STRUCTURES
        )
        if staged:
            for stored in uploads.values():
                store.put_file(stored.key, target.path_for(stored.key))
    except BaseException:
        store.delete_prefix(prefix)
        raise
    finally:
        if staged:
            shutil.rmtree(staging_root, ignore_errors=True)
    return uploads


def canonical_keys(uploads: Mapping[str, StoredUpload]) -> dict[str, str]:
    """The ``JobSpec.inputs`` mapping: input kind -> store key."""
    return {field: upload.key for field, upload in uploads.items()}


def upload_checksums(uploads: Mapping[str, StoredUpload]) -> dict[str, dict[str, Any]]:
    """The ``JobSpec.checksums`` mapping: store key -> SHA-256 and size as uploaded."""
    return {
        upload.key: {"sha256": upload.sha256, "size": upload.size} for upload in uploads.values()
    }


def upload_paths(store: ArtifactStore, uploads: Mapping[str, StoredUpload]) -> dict[str, Path]:
    """Local paths of the uploads (for logs and tests)."""
    return {field: store.path_for(upload.key) for field, upload in uploads.items()}


class BodySizeLimitMiddleware:
    """Refuse a ``POST /submit`` body longer than ``max_body_bytes`` with 413, early.

    A declared ``Content-Length`` over the limit is answered before a byte is read. A chunked body
    is counted as it arrives; past the limit the app sees a disconnect and the client gets 413.
    Per-file limits are enforced again when each file is stored.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, paths: tuple[str, ...] = ("/submit",)):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        for name, value in scope.get("headers", []):
            is_length = name.lower() == b"content-length" and value.isdigit()
            if is_length and int(value) > self.max_body_bytes:
                await self._reject(send, request_id)
                return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                if not started:
                    started = True
                    await self._reject(send, request_id)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _reject(self, send: Send, request_id: str | None) -> None:
        error = PayloadTooLargeError(
            f"the request body is larger than {self.max_body_bytes} bytes",
            fix="send smaller files, or raise PRECISE_MRD_MAX_UPLOAD_BYTES on the server",
        )
        await send_error(error, send, request_id=request_id, close=True)
