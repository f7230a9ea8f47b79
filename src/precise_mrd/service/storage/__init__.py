"""Artifact stores: uploads and job outputs under safe keys (local directory now, object
stores later behind the same :class:`ArtifactStore` protocol)."""

from precise_mrd.service.storage.base import (
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactStoreError,
    ArtifactTooLargeError,
    InvalidArtifactKeyError,
    validate_key,
)
from precise_mrd.service.storage.local import LocalArtifactStore

__all__ = [
    "ArtifactNotFoundError",
    "ArtifactStore",
    "ArtifactStoreError",
    "ArtifactTooLargeError",
    "InvalidArtifactKeyError",
    "LocalArtifactStore",
    "validate_key",
]
