"""Column tables to TSV and Parquet.

A table is a mapping of column name -> sequence of values, all of equal length. TSV floats are
written with 6 significant digits; missing values as empty cells.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "t.tsv"
>>> write_tsv(path, {"chrom": ["chr1"], "pos": [5], "p_value": [0.00012345678]})
>>> print(path.read_text().replace(chr(9), " | "), end="")
chrom | pos | p_value
chr1 | 5 | 0.000123457
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

Table = Mapping[str, Sequence[Any]]


def _check_lengths(table: Table) -> int:
    lengths = {name: len(values) for name, values in table.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns differ in length: {lengths}")
    return next(iter(lengths.values()), 0)


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return ";".join(_format_cell(item) for item in value)
    return str(value)


def write_tsv(path: Path, table: Table) -> None:
    """Write ``table`` as tab-separated text with a header line."""
    n_rows = _check_lengths(table)
    names = list(table)
    lines = ["\t".join(names)]
    for row in range(n_rows):
        lines.append("\t".join(_format_cell(table[name][row]) for name in names))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_parquet(path: Path, table: Table) -> None:
    """Write ``table`` as a Parquet file (list columns become ``;``-joined strings)."""
    _check_lengths(table)
    columns = {
        name: [_format_cell(v) if isinstance(v, list | tuple) else v for v in values]
        for name, values in table.items()
    }
    pq.write_table(pa.table(columns), path)
