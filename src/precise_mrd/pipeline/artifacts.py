"""The names of a run's output files: a contract shared by the CLI, the report and the service.

>>> ARTIFACTS["report"]
'report.html'
"""

from __future__ import annotations

from typing import Final

#: download type -> file name inside a run's output directory
ARTIFACTS: Final[dict[str, str]] = {
    "consensus_bam": "consensus.bam",
    "calls": "variants.tsv",
    "calls_parquet": "variants.parquet",
    "sample_call": "sample_call.json",
    "metrics": "metrics.json",
    "report": "report.html",
    "config": "config.yaml",
    "log": "run.log",
}

#: media type of each download type
MEDIA_TYPES: Final[dict[str, str]] = {
    "consensus_bam": "application/octet-stream",
    "calls": "text/tab-separated-values",
    "calls_parquet": "application/vnd.apache.parquet",
    "sample_call": "application/json",
    "metrics": "application/json",
    "report": "text/html",
    "config": "application/yaml",
    "log": "text/plain",
}
