"""One exception hierarchy for the whole package.

::

    PreciseMRDError                 base; never raised directly
    ├── InputError                  a user-supplied file or value is wrong (names it and the fix)
    │   ├── InputFileError          a file is missing, unreadable, truncated or of a wrong format
    │   └── InputDataError          a file reads but its content does not fit (REF mismatch...)
    ├── ConfigError                 a configuration value is out of range or inconsistent
    └── PipelineError               a stage failed on valid input (a bug or a resource limit)

The CLI prints ``str(error)`` of an :class:`InputError` or :class:`ConfigError` on one line and
exits non-zero without a traceback; the service maps them to HTTP 422.

>>> err = InputFileError("reads.bam", "is not coordinate-sorted", "run `samtools sort`")
>>> str(err)
'reads.bam: is not coordinate-sorted; fix: run `samtools sort`'
"""

from __future__ import annotations


class PreciseMRDError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(PreciseMRDError):
    """A user-supplied input is wrong. The message names the input, the problem and the fix."""

    def __init__(self, source: str, problem: str, fix: str) -> None:
        self.source = source
        self.problem = problem
        self.fix = fix
        super().__init__(f"{source}: {problem}; fix: {fix}")


class InputFileError(InputError):
    """A file is missing, unreadable, truncated or not of the expected format."""


class InputDataError(InputError):
    """A file reads fine but its content is inconsistent with the other inputs."""


class ConfigError(PreciseMRDError):
    """A configuration value is invalid. ``path`` is the dotted key, e.g. ``calling.alpha``."""

    def __init__(self, path: str, problem: str, fix: str) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"config {path}: {problem}; fix: {fix}")


class PipelineError(PreciseMRDError):
    """A stage failed on input that passed validation."""
