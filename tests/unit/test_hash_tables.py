"""The numpy hash tables that replaced numba typed dicts: UMI interning and open molecules."""

from __future__ import annotations

import numpy as np

from precise_mrd.io.bam import MAX_UMI_LENGTH
from precise_mrd.pipeline.consensus_molecules import (
    _assign_instances,
    _complete_reads,
    _OpenMolecules,
)
from precise_mrd.pipeline.group import _intern_umis, _UmiInterner


def test_umi_codes_are_first_seen_order_across_table_growth() -> None:
    rng = np.random.default_rng(3)
    n_distinct = 20_000  # several rehashes from the initial 4096 slots
    distinct = rng.integers(65, 70, size=(n_distinct, 12)).astype(np.uint8)
    picks = np.concatenate([np.arange(n_distinct), rng.integers(0, n_distinct, size=30_000)])
    interner = _UmiInterner()
    codes_out = []
    for part in np.array_split(picks, 7):
        umis = np.zeros((len(part), MAX_UMI_LENGTH), dtype=np.uint8)
        umis[:, :12] = distinct[part]
        lengths = np.full(len(part), 12, dtype=np.int64)
        interner.reserve(len(part))
        codes, interner.n_codes, collided = _intern_umis(
            umis,
            lengths,
            np.arange(len(part), dtype=np.int64),
            interner.slot_hashes,
            interner.slot_codes,
            interner.table,
            interner.lengths,
            interner.n_codes,
        )
        assert not collided
        codes_out.append(codes)
    codes = np.concatenate(codes_out)
    # the first n_distinct picks are new UMIs in order; repeats get the code of their first
    expected = {}
    for row in picks.tolist():
        expected.setdefault(bytes(distinct[row]), len(expected))
    assert codes.tolist() == [expected[bytes(distinct[row])] for row in picks.tolist()]
    assert interner.n_codes == len(expected)


def test_open_molecules_match_a_dict_model() -> None:
    rng = np.random.default_rng(4)
    table = _OpenMolecules()
    model: dict[int, list[int]] = {}  # code -> [instance, largest]
    next_instance = 0
    key = 0
    for _ in range(40):
        n = 500
        codes = rng.integers(-(2**62), 2**62, size=60)[rng.integers(0, 60, size=n)]
        keys = key + np.sort(rng.integers(0, 50, size=n))
        needed = keys + rng.integers(0, 100, size=n)
        key = int(keys[-1])
        table.reserve(n)
        out, next_after, n_added = _assign_instances(
            codes, keys, needed, table.codes, table.instances, table.largest, next_instance
        )
        table.n_open += n_added
        expected = []
        for code, k, need in zip(codes.tolist(), keys.tolist(), needed.tolist(), strict=True):
            entry = model.get(code)
            if entry is not None and k <= entry[1]:
                entry[1] = max(entry[1], need)
            else:
                entry = model[code] = [next_instance, need]
                next_instance += 1
            expected.append(entry[0])
        assert out.tolist() == expected and next_after == next_instance
        done = _complete_reads(codes, out, table.codes, table.instances, table.largest, key)
        assert done.tolist() == [
            model[c][0] != i or model[c][1] < key
            for c, i in zip(codes.tolist(), out.tolist(), strict=True)
        ]
        table.forget_finished(key)
        model = {c: e for c, e in model.items() if e[1] >= key}
        assert table.n_open == len(model)
