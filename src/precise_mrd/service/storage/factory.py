"""``PRECISE_MRD_STORAGE_URL`` -> an artifact store.

============================  ====================================================================
``/path`` or ``file:///path`` a local directory (:class:`LocalArtifactStore`); unset: ``<data dir>/
                              artifacts``
``s3://bucket/prefix``        S3, MinIO, SeaweedFS (obstore). ``AWS_ACCESS_KEY_ID``,
                              ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
                              ``AWS_ENDPOINT_URL`` (a non-AWS server), or the instance's role
``gs://bucket/prefix``        Google Cloud Storage (Google's client).
                              ``GOOGLE_APPLICATION_CREDENTIALS`` or workload identity;
                              ``STORAGE_EMULATOR_HOST`` for an emulator
``az://container/prefix``     Azure Blob (obstore). ``AZURE_STORAGE_CONNECTION_STRING``, or
                              ``AZURE_STORAGE_ACCOUNT_NAME`` with ``AZURE_STORAGE_ACCOUNT_KEY``,
                              a SAS token or a managed identity
============================  ====================================================================

Credentials never come from the URL: ``s3://key:secret@bucket`` is refused with the variables to
use instead (a URL ends up in logs, ``ps`` and job records).

>>> open_store("", default_root=Path("/tmp/pmrd-doctest/artifacts"))
LocalArtifactStore('/tmp/pmrd-doctest/artifacts')
>>> open_store("s3://key:secret@bucket/x", default_root=Path("/tmp"))
Traceback (most recent call last):
...
precise_mrd.service.storage.factory.StorageUrlError: PRECISE_MRD_STORAGE_URL s3://***@bucket/x \
carries credentials; fix: remove them from the URL and set AWS_ACCESS_KEY_ID and \
AWS_SECRET_ACCESS_KEY (or the instance's role) instead
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from precise_mrd.service.storage.base import ArtifactStore, ArtifactStoreError
from precise_mrd.service.storage.local import LocalArtifactStore

SCHEMES = ("s3", "gs", "az")
_CREDENTIAL_HINTS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the instance's role)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS (or workload identity)",
    "az": "AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_ACCOUNT_NAME and "
    "AZURE_STORAGE_ACCOUNT_KEY)",
}


class StorageUrlError(ArtifactStoreError, ValueError):
    """``PRECISE_MRD_STORAGE_URL`` cannot be used as it is."""


def parse_connection_string(text: str) -> dict[str, str]:
    """An Azure Storage connection string as obstore Azure settings.

    >>> config = parse_connection_string(
    ...     "DefaultEndpointsProtocol=http;AccountName=dev;AccountKey=a2V5;"
    ...     "BlobEndpoint=http://127.0.0.1:10000/dev;")
    >>> config["account_name"], config["endpoint"]
    ('dev', 'http://127.0.0.1:10000/dev')
    """
    parts = dict(item.split("=", 1) for item in text.strip().strip(";").split(";") if "=" in item)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return {"use_emulator": "true"}
    config = {}
    if "AccountName" in parts:
        config["account_name"] = parts["AccountName"]
    if "AccountKey" in parts:
        config["account_key"] = parts["AccountKey"]
    if "SharedAccessSignature" in parts:
        config["sas_key"] = parts["SharedAccessSignature"]
    if "BlobEndpoint" in parts:
        config["endpoint"] = parts["BlobEndpoint"].rstrip("/")
    return config


def open_store(url: str, *, default_root: Path) -> ArtifactStore:
    """The artifact store ``url`` names (the local ``default_root`` when ``url`` is empty)."""
    if not url:
        return LocalArtifactStore(default_root)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        return LocalArtifactStore(Path(parts.path if scheme else url).expanduser().absolute())
    if scheme not in SCHEMES:
        raise StorageUrlError(
            f"PRECISE_MRD_STORAGE_URL {url}: scheme {scheme!r} is not supported; fix: use a path, "
            "s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
        )
    if "@" in parts.netloc:
        shown = f"{scheme}://***@{parts.netloc.rsplit('@', 1)[1]}{parts.path}"
        raise StorageUrlError(
            f"PRECISE_MRD_STORAGE_URL {shown} carries credentials; fix: remove them from the URL "
            f"and set {_CREDENTIAL_HINTS[scheme]} instead"
        )
    bucket = parts.netloc
    if not bucket:
        raise StorageUrlError(
            f"PRECISE_MRD_STORAGE_URL {url}: no bucket; fix: write {scheme}://<bucket>/<prefix>"
        )
    prefix = parts.path.strip("/")
    if scheme == "gs":
        from precise_mrd.service.storage.gcs import GcsArtifactStore

        return GcsArtifactStore(bucket, prefix, url)
    from precise_mrd.service.storage.objects import ObjectArtifactStore

    if scheme == "s3":
        return ObjectArtifactStore(_s3_store(bucket, prefix), url, hint=_CREDENTIAL_HINTS["s3"])
    return ObjectArtifactStore(_azure_store(bucket, prefix), url, hint=_CREDENTIAL_HINTS["az"])


def _client_options(endpoint: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"connect_timeout": "5s", "timeout": "300s"}
    if endpoint and endpoint.startswith("http://"):
        options["allow_http"] = True
    return options


def _s3_store(bucket: str, prefix: str) -> Any:
    from obstore.store import S3Store

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config: dict[str, Any] = {}
    if endpoint:
        # NB: MinIO and SeaweedFS serve buckets as paths, not as virtual hosts
        config["virtual_hosted_style_request"] = False
        if not os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
            config["region"] = "us-east-1"
    return S3Store(
        bucket,
        prefix=prefix or None,
        config=config,  # type: ignore[arg-type]
        client_options=_client_options(endpoint),  # type: ignore[arg-type]
    )


def _azure_store(container: str, prefix: str) -> Any:
    from obstore.store import AzureStore

    config: dict[str, Any] = {}
    connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection:
        config.update(parse_connection_string(connection))
    return AzureStore(
        container,
        prefix=prefix or None,
        config=config,  # type: ignore[arg-type]
        client_options=_client_options(config.get("endpoint")),  # type: ignore[arg-type]
    )
