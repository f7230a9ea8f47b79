"""Google Cloud Storage artifact store, through Google's own client (``google-cloud-storage``).

Why not obstore here too: obstore speaks GCS's XML API, which the emulators one can run offline
(``gcp-storage-emulator``) do not implement; Google's client speaks the JSON API, which both Cloud
Storage and the emulator do. Credentials come from Google's standard places
(``GOOGLE_APPLICATION_CREDENTIALS``, workload identity, ``gcloud auth application-default``); with
``STORAGE_EMULATOR_HOST`` set the client talks to that emulator without credentials.

Uploads are resumable uploads in 8 MiB chunks (an upload past ``max_bytes`` is never finalised,
so no object appears); reads stream in chunks. Presigned URLs need credentials that can sign (a
service-account key or the IAM signBlob permission); without them downloads stream through the API.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from precise_mrd.service.storage.base import (
    CHUNK_BYTES,
    ArtifactNotFoundError,
    ArtifactStoreError,
    ArtifactTooLargeError,
    validate_key,
    validate_prefix,
)
from precise_mrd.service.storage.objects import PART_BYTES, ObjectStoreError

HINT = "GOOGLE_APPLICATION_CREDENTIALS (or STORAGE_EMULATOR_HOST) and the bucket's IAM"


class _Limited:
    """A read-only stream that raises :class:`ArtifactTooLargeError` past ``max_bytes``."""

    def __init__(self, stream: BinaryIO, key: str, max_bytes: int | None) -> None:
        self._stream = stream
        self._key = key
        self._max = max_bytes
        self.count = 0

    def tell(self) -> int:
        return self.count

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size if size and size > 0 else CHUNK_BYTES)
        self.count += len(data)
        if self._max is not None and self.count > self._max:
            raise ArtifactTooLargeError(self._key, self._max)
        return data


class GcsArtifactStore:
    """An :class:`ArtifactStore` over one bucket (and a prefix) of Google Cloud Storage."""

    def __init__(self, bucket: str, prefix: str, url: str) -> None:
        from google.cloud import storage  # NB: ~0.5 s to import; only for gs:// stores

        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            self.client = storage.Client(
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                project="emulator",
            )
        else:
            self.client = storage.Client()
        self.bucket = self.client.bucket(bucket)
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = url

    def __repr__(self) -> str:
        return f"GcsArtifactStore({self.url!r})"

    def _blob(self, key: str) -> Any:
        return self.bucket.blob(self.prefix + validate_key(key), chunk_size=PART_BYTES)

    def _fail(self, key: str, error: Exception) -> ArtifactStoreError:
        from google.api_core import exceptions

        if isinstance(error, exceptions.NotFound):
            if "bucket" in str(error).lower() and "object" not in str(error).lower():
                return ObjectStoreError(f"{self.url}: the bucket does not exist; create it")
            return ArtifactNotFoundError(key)
        first = str(error).splitlines()[0][:400]
        return ObjectStoreError(f"{self.url}: {key!r}: {first}; fix: check {HINT}")

    def local_path(self, key: str) -> Path | None:
        return None

    def put_stream(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> int:
        blob = self._blob(key)
        limited = _Limited(stream, key, max_bytes)
        try:
            blob.upload_from_file(limited, rewind=False)
        except ArtifactTooLargeError:
            raise
        except Exception as error:
            raise self._fail(key, error) from None
        return limited.count

    def put_file(self, key: str, path: Path) -> int:
        blob = self._blob(key)
        try:
            blob.upload_from_filename(str(path))
        except Exception as error:
            raise self._fail(key, error) from None
        return Path(path).stat().st_size

    def open(self, key: str) -> BinaryIO:
        blob = self._blob(key)
        try:
            blob.reload()
            return blob.open("rb", chunk_size=CHUNK_BYTES)  # type: ignore[no-any-return]
        except Exception as error:
            raise self._fail(key, error) from None

    def get_file(self, key: str, path: Path) -> int:
        blob = self._blob(key)
        try:
            blob.download_to_filename(str(path))
        except Exception as error:
            Path(path).unlink(missing_ok=True)
            raise self._fail(key, error) from None
        return Path(path).stat().st_size

    def path_for(self, key: str) -> Path:
        raise ObjectStoreError(f"{self.url}: objects have no local path; use open() or get_file()")

    def exists(self, key: str) -> bool:
        try:
            return bool(self._blob(key).exists())
        except Exception as error:
            raise self._fail(key, error) from None

    def size(self, key: str) -> int:
        blob = self._blob(key)
        try:
            blob.reload()
        except Exception as error:
            raise self._fail(key, error) from None
        return int(blob.size)

    def delete(self, key: str) -> bool:
        from google.api_core import exceptions

        try:
            self._blob(key).delete()
        except exceptions.NotFound:
            return False
        except Exception as error:
            raise self._fail(key, error) from None
        return True

    def list_keys(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        try:
            names = [
                blob.name
                for blob in self.client.list_blobs(self.bucket, prefix=self.prefix + prefix)
            ]
        except Exception as error:
            raise self._fail(prefix, error) from None
        return sorted(name[len(self.prefix) :] for name in names)

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        deleted = 0
        try:
            for blob in self.client.list_blobs(self.bucket, prefix=self.prefix + prefix):
                blob.delete()
                deleted += 1
        except Exception as error:
            raise self._fail(prefix, error) from None
        return deleted

    def presigned_url(self, key: str, *, expires_seconds: int) -> str | None:
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            return None
        try:
            return str(
                self._blob(key).generate_signed_url(
                    expiration=timedelta(seconds=expires_seconds), method="GET", version="v4"
                )
            )
        except Exception:
            return None  # NB: credentials that cannot sign: stream through the API instead
