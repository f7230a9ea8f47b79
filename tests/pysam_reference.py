"""Reference readers for the compiled BAM decoders: one pysam object per read.

The evidence stage (``precise_mrd.pipeline.evidence._read_window``) and the ML features
(``precise_mrd.ml.features._read_window``) read each window from raw BAM records found through the
index (:mod:`precise_mrd.io.bam_regions`). The readers here give what they must give, from
``pysam`` ``fetch`` (htslib's own region query, CIGAR and tag decoding), written the plain way and
independently of the compiled kernels; the tests compare the two bit for bit:

* :func:`read_evidence_window` as ``evidence._read_window`` (deduplicated molecule observations,
  record counts into the accumulator);
* :func:`read_feature_window` as ``features._read_window`` (per-base rows and per-read columns).

:func:`evidence_through_pysam` and :func:`features_through_pysam` put them in place of the
compiled readers (with ``monkeypatch``), so that a whole ``collect_evidence`` or
``extract_observations`` runs on the reference.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import pysam
import pytest

from precise_mrd.io.bam_columns import STRAND_BOTH, strand_of_origin
from precise_mrd.ml import features
from precise_mrd.pipeline import evidence

IntArray = npt.NDArray[np.int64]

_SKIP_FLAGS = 0x4 | 0x100 | 0x200 | 0x800  # unmapped, secondary, QC fail, supplementary
_CIGAR_MATCH = (0, 7, 8)
_CIGAR_QUERY = (0, 1, 4, 7, 8)
_CIGAR_REF = (0, 2, 3, 7, 8)
_BASE_CODE = np.full(256, 4, dtype=np.int8)
for _i, _b in enumerate("ACGT"):
    _BASE_CODE[ord(_b)] = _i
    _BASE_CODE[ord(_b.lower())] = _i
_BASE_CODE64 = _BASE_CODE.astype(np.int64)


def evidence_through_pysam(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``collect_evidence`` read every window with :func:`read_evidence_window`."""

    def reference(bam: pysam.AlignmentFile, reader: Any, *args: Any) -> evidence._Window:
        return read_evidence_window(bam, *args)

    monkeypatch.setattr(evidence, "_read_window", reference)


def features_through_pysam(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``extract_observations`` read every region with :func:`read_feature_window`."""

    def reference(bam: pysam.AlignmentFile, records: Any, *args: Any) -> features._Reads | None:
        return read_feature_window(bam, *args)

    monkeypatch.setattr(features, "_read_window", reference)


def read_evidence_window(
    bam: pysam.AlignmentFile,
    chrom: str,
    start: int,
    end: int,
    min_base_quality: int,
    min_mapping_quality: int,
    acc: evidence._Accumulator,
    first_window: bool,
) -> evidence._Window:
    """What ``evidence._read_window`` gives for ``[start, end)`` (the same arguments but the
    raw reader), from one pysam object per read; adds the window's record counts to ``acc``."""
    seqs: list[str] = []
    quals: list[str] = []
    blk_q: list[int] = []  # query start of a block in the concatenated sequence
    blk_qr: list[int] = []  # query start of the block within its read
    blk_r: list[int] = []
    blk_len: list[int] = []
    blk_read: list[int] = []
    read_mol: list[int] = []
    read_duplex: list[bool] = []
    read_flags: list[int] = []
    read_origin: list[int] = []
    read_qlen: list[int] = []
    molecules: dict[str, int] = {}
    low_mapq: list[tuple[str, int, int]] = []
    low_molecules: dict[str, int] = {}
    offset = 0
    for read in bam.fetch(chrom, start, end):
        flag = read.flag
        if flag & _SKIP_FLAGS:
            continue
        # NB: a read is seen by every window it spans; count it in the first one only
        counted = first_window or read.reference_start >= start
        acc.n_records += counted
        try:
            mi = read.get_tag("MI")
        except KeyError:
            acc.n_skipped += counted
            continue
        if read.mapping_quality < min_mapping_quality:
            low_mapq.append((str(mi), read.reference_start, read.reference_end or 0))
            continue
        seq = read.query_sequence
        qual = read.query_qualities_str
        cigar = read.cigartuples
        if seq is None or not qual or cigar is None:
            acc.n_skipped += counted
            continue
        try:
            is_duplex = read.get_tag("bD") > 0 and read.get_tag("aD") > 0  # type: ignore[operator]
        except KeyError:
            is_duplex = False
        r_index = len(read_qlen)
        read_mol.append(molecules.setdefault(str(mi), len(molecules)))
        read_duplex.append(is_duplex)
        read_flags.append(flag)
        read_origin.append(int(read.get_tag("sO")) if read.has_tag("sO") else 0)
        qlen = len(seq)
        read_qlen.append(qlen)
        if len(cigar) == 1 and cigar[0][0] in _CIGAR_MATCH:
            blk_q.append(offset)
            blk_qr.append(0)
            blk_r.append(read.reference_start)
            blk_len.append(qlen)
            blk_read.append(r_index)
        else:
            q = 0
            r = read.reference_start
            for op, length in cigar:
                if op in _CIGAR_MATCH:
                    blk_q.append(offset + q)
                    blk_qr.append(q)
                    blk_r.append(r)
                    blk_len.append(length)
                    blk_read.append(r_index)
                if op in _CIGAR_QUERY:
                    q += length
                if op in _CIGAR_REF:
                    r += length
        seqs.append(seq)
        quals.append(qual)
        offset += qlen
    low_molecule = np.array(
        [low_molecules.setdefault(mi, len(low_molecules)) for mi, _, _ in low_mapq], dtype=np.int64
    )
    low_start = np.array([s for _, s, _ in low_mapq], dtype=np.int64)
    low_end = np.array([e for _, _, e in low_mapq], dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    if not blk_len:
        return evidence._Window(
            empty, empty, empty, empty, empty, low_molecule, low_start, low_end, empty
        )
    seq_codes = _BASE_CODE[np.frombuffer("".join(seqs).encode("ascii"), dtype=np.uint8)]
    qual_arr = np.frombuffer("".join(quals).encode("ascii"), dtype=np.uint8)
    _, rel, base, read_idx, distance = _molecule_observations(
        seq_codes,
        qual_arr,
        np.asarray(blk_q, dtype=np.int64),
        np.asarray(blk_qr, dtype=np.int64),
        np.asarray(blk_r, dtype=np.int64),
        np.asarray(blk_len, dtype=np.int64),
        np.asarray(blk_read, dtype=np.int64),
        np.asarray(read_mol, dtype=np.int64),
        np.asarray(read_qlen, dtype=np.int64),
        len(molecules),
        start,
        end,
        min_base_quality + 33,
    )
    return evidence._Window(
        rel=rel,
        base=base,
        duplex=np.asarray(read_duplex, dtype=np.int64)[read_idx],
        template=strand_of_origin(
            np.asarray(read_flags, dtype=np.int64), np.asarray(read_origin, dtype=np.int64)
        )[read_idx],
        distance=distance,
        low_mapq_molecule=low_molecule,
        low_mapq_start=low_start,
        low_mapq_end=low_end,
        both_strands=(np.asarray(read_origin, dtype=np.int64) == STRAND_BOTH)[read_idx].astype(
            np.int64
        ),
    )


@numba.njit(cache=True, nogil=True)
def _molecule_observations(
    seq: npt.NDArray[np.int8],
    qual33: npt.NDArray[np.uint8],
    blk_q: IntArray,
    blk_qr: IntArray,
    blk_r: IntArray,
    blk_len: IntArray,
    blk_read: IntArray,
    read_mol: IntArray,
    read_qlen: IntArray,
    n_mol: int,
    win_start: int,
    win_end: int,
    min_qual33: int,
) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray]:
    """One observation per (molecule, window position) with a confident base.

    Blocks are grouped by molecule (counting sort); each molecule fills a small buffer over the
    window; a position seen by two reads of the molecule keeps the first read's observation, or
    none if the bases disagree. ``qual33`` are ASCII (Phred+33) qualities.
    """
    n_blk = blk_len.shape[0]
    blk_mol = np.empty(n_blk, dtype=np.int64)
    per_mol = np.zeros(n_mol + 1, dtype=np.int64)
    for i in range(n_blk):
        m = read_mol[blk_read[i]]
        blk_mol[i] = m
        per_mol[m + 1] += 1
    for m in range(n_mol):
        per_mol[m + 1] += per_mol[m]
    fill = per_mol[:-1].copy()
    order = np.empty(n_blk, dtype=np.int64)
    for i in range(n_blk):
        m = blk_mol[i]
        order[fill[m]] = i
        fill[m] += 1
    span = win_end - win_start
    buf_base = np.full(span, -1, dtype=np.int64)
    buf_read = np.zeros(span, dtype=np.int64)
    buf_dist = np.zeros(span, dtype=np.int64)
    total = 0
    for i in range(n_blk):
        total += blk_len[i]
    out_mol = np.empty(total, dtype=np.int64)
    out_rel = np.empty(total, dtype=np.int64)
    out_base = np.empty(total, dtype=np.int64)
    out_read = np.empty(total, dtype=np.int64)
    out_dist = np.empty(total, dtype=np.int64)
    n_out = 0
    for m in range(n_mol):
        lo = span
        hi = 0
        for j in range(per_mol[m], per_mol[m + 1]):
            i = order[j]
            r0 = max(blk_r[i] - win_start, 0)
            r1 = min(blk_r[i] + blk_len[i] - win_start, span)
            for rel in range(r0, r1):
                k = rel + win_start - blk_r[i]
                qi = blk_q[i] + k
                b = seq[qi]
                if b > 3 or qual33[qi] < min_qual33:
                    continue
                cur = buf_base[rel]
                if cur == -1:
                    buf_base[rel] = b
                    buf_read[rel] = blk_read[i]
                    qpos = blk_qr[i] + k
                    qlen = read_qlen[blk_read[i]]
                    buf_dist[rel] = min(qpos, qlen - 1 - qpos)
                    lo = min(lo, rel)
                    hi = max(hi, rel + 1)
                elif cur >= 0 and cur != b:
                    buf_base[rel] = -2  # mates disagree: drop the molecule here
        for rel in range(lo, hi):
            if buf_base[rel] >= 0:
                out_mol[n_out] = m
                out_rel[n_out] = rel
                out_base[n_out] = buf_base[rel]
                out_read[n_out] = buf_read[rel]
                out_dist[n_out] = buf_dist[rel]
                n_out += 1
            buf_base[rel] = -1
    return (
        out_mol[:n_out],
        out_rel[:n_out],
        out_base[:n_out],
        out_read[:n_out],
        out_dist[:n_out],
    )


def read_feature_window(
    bam: pysam.AlignmentFile,
    chrom: str,
    start: int,
    end: int,
    min_base_quality: int,
    min_mapping_quality: int,
) -> features._Reads | None:
    """What ``features._read_window`` gives for ``[start, end)`` of ``chrom`` (the same
    arguments but the raw reader), from one pysam object per read; ``None`` or empty rows when
    no read has a confident base there."""
    blk_r: list[int] = []  # reference start of an aligned block
    blk_q: list[int] = []  # its query start within the read
    blk_len: list[int] = []
    blk_read: list[int] = []
    read_qlen: list[int] = []
    seqs: list[bytes] = []
    quals: list[bytes] = []
    per_read: list[tuple[int, float, float, int, float, float, float, int, int, int]] = []
    molecules: dict[str, int] = {}
    for rec in bam.fetch(chrom, start, end):
        flag = rec.flag
        if flag & _SKIP_FLAGS or rec.mapping_quality < min_mapping_quality:
            continue
        seq, qual_text, cigar = rec.query_sequence, rec.query_qualities_str, rec.cigartuples
        if seq is None or not qual_text or cigar is None:
            continue
        try:
            mi = str(rec.get_tag("MI"))
        except KeyError:
            continue
        a_depth, b_depth = _tag(rec, "aD", 0.0), _tag(rec, "bD", 0.0)
        index = len(per_read)
        per_read.append(
            (
                molecules.setdefault(mi, len(molecules)),
                _tag(rec, "cD", 1.0),
                min(a_depth, b_depth),
                int(a_depth > 0 and b_depth > 0),
                _tag(rec, "cE", 0.0),
                float(rec.mapping_quality),
                float(abs(rec.template_length)),
                ((flag >> 4) ^ (flag >> 7)) & 1,
                flag,
                int(_tag(rec, "sO", 0.0)),
            )
        )
        read_qlen.append(len(seq))
        q = 0
        r = rec.reference_start
        for op, length in cigar:
            if op in _CIGAR_MATCH:
                blk_r.append(r)
                blk_q.append(q)
                blk_len.append(length)
                blk_read.append(index)
            if op in _CIGAR_QUERY:
                q += length
            if op in _CIGAR_REF:
                r += length
        seqs.append(seq.encode("ascii"))
        quals.append(qual_text.encode("ascii"))
    if not per_read or not blk_len:
        return None
    lengths = np.asarray(blk_len, dtype=np.int64)
    within = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(
        np.cumsum(lengths) - lengths, lengths
    )
    read = np.repeat(np.asarray(blk_read, dtype=np.int64), lengths)
    qpos = np.repeat(np.asarray(blk_q, dtype=np.int64), lengths) + within
    qlen = np.asarray(read_qlen, dtype=np.int64)[read]
    starts = np.cumsum([0] + [len(s) for s in seqs])[:-1]
    flat = starts[read] + qpos
    base = _BASE_CODE64[np.frombuffer(b"".join(seqs), dtype=np.uint8)][flat]
    qual = np.frombuffer(b"".join(quals), dtype=np.uint8).astype(np.int64)[flat] - 33
    pos = np.repeat(np.asarray(blk_r, dtype=np.int64), lengths) + within
    keep = (base < 4) & (qual >= min_base_quality) & (pos >= start) & (pos < end)
    cols = np.array([p[1:] for p in per_read], dtype=np.float64)
    return features._Reads(
        pos=pos[keep],
        base=base[keep],
        qual=qual[keep],
        dist=np.minimum(qpos, qlen - 1 - qpos)[keep],
        read=read[keep],
        mol=np.array([p[0] for p in per_read], dtype=np.int64),
        family_size=cols[:, 0],
        min_strand=cols[:, 1],
        duplex=cols[:, 2].astype(np.int64),
        error_rate=cols[:, 3],
        mapq=cols[:, 4],
        fragment=cols[:, 5],
        template=cols[:, 6].astype(np.int64),
        strand=strand_of_origin(cols[:, 7].astype(np.int64), cols[:, 8].astype(np.int64)),
        both=(cols[:, 8] == STRAND_BOTH).astype(np.int64),
    )


def _tag(rec: pysam.AlignedSegment, name: str, default: float) -> float:
    # NB: get_tag + KeyError is ~4x cheaper than dict(rec.get_tags()) on consensus records
    try:
        return float(rec.get_tag(name))
    except KeyError:
        return default
