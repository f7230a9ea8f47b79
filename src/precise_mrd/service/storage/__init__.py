"""Artifact stores: uploads and job outputs under safe keys, in a local directory or an object
store (S3, Cloud Storage, Azure Blob) behind the same :class:`ArtifactStore` protocol."""

from typing import TYPE_CHECKING

from precise_mrd.service.storage.base import (
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactStoreError,
    ArtifactTooLargeError,
    InvalidArtifactKeyError,
    validate_key,
)
from precise_mrd.service.storage.local import LocalArtifactStore

if TYPE_CHECKING:
    from precise_mrd.service.settings import Settings


def store_from_settings(settings: "Settings") -> ArtifactStore:
    """The store ``PRECISE_MRD_STORAGE_URL`` names; unset: ``<data dir>/artifacts``."""
    from precise_mrd.service.storage.factory import open_store

    return open_store(settings.storage_url, default_root=settings.artifact_dir)


__all__ = [
    "ArtifactNotFoundError",
    "ArtifactStore",
    "ArtifactStoreError",
    "ArtifactTooLargeError",
    "InvalidArtifactKeyError",
    "LocalArtifactStore",
    "store_from_settings",
    "validate_key",
]
