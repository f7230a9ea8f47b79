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

#: download type -> file name of a validation (dilution-series) job
VALIDATION_ARTIFACTS: Final[dict[str, str]] = {
    "validation": "validation.json",
    "validation_report": "validation.html",
}

#: every download type a job may offer
DOWNLOAD_TYPES: Final[dict[str, str]] = {**ARTIFACTS, **VALIDATION_ARTIFACTS}

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
    "validation": "application/json",
    "validation_report": "text/html",
}
