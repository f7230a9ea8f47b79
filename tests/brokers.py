"""Message brokers for the Celery tests: the machine's own, isolated, or one a test starts itself.

* :func:`shared_broker` yields a broker URL and a queue name of the test's own on the machine's
  Redis (6379) or RabbitMQ (5672, a vhost of its own made with ``rabbitmqctl``); both are removed
  afterwards. The shared servers are never stopped.
* :class:`OwnRedis` and :class:`OwnRabbit` start a server of the test's own on a free loopback port,
  with its data under the test's directory, so a test may stop and restart it.
* :class:`Background` is any process a test starts (a worker, a broker), in its own process group,
  with its output in a log file; ``stop`` is SIGTERM, ``kill`` SIGKILL, both to the whole group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from servers import ROOT, free_port

BROKERS = ("redis", "rabbitmq")
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Background:
    """A process of the test's own, in its own process group, output in ``log_path``."""

    def __init__(
        self, command: list[str], log_path: Path, *, env: dict[str, str] | None = None
    ) -> None:
        self.command = command
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop/kill
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def signal(self, number: int, *, group: bool = True) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.process.pid, number)
            else:
                os.kill(self.process.pid, number)

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM to the group; SIGKILL after ``timeout``. Returns the exit code."""
        if self.running():
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return int(self.process.returncode)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        """Wait until ``text`` appears in the log."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if not self.running():
                raise RuntimeError(f"{self.command[0]} exited: {self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {text!r} after {timeout} s: {self.log_text()[-3000:]}")
            time.sleep(0.1)


def wait_for_port(port: int, process: Background, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if not process.running():
            raise RuntimeError(f"{process.command[0]} exited: {process.log_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} not open after {timeout} s")
        time.sleep(0.1)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def shared_broker(kind: str) -> Iterator[tuple[str, str]]:
    """``(broker_url, queue)`` of the test's own on the machine's Redis or RabbitMQ."""
    token = uuid.uuid4().hex[:12]
    queue = f"pmrd-test-{token}"
    if kind == "redis":
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, db=0)
        try:
            yield "redis://127.0.0.1:6379/0", queue
        finally:
            keys = list(client.scan_iter(match=f"*{queue}*"))
            if keys:
                client.delete(*keys)
            client.close()
        return
    vhost = f"pmrd-test-{token}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}", queue
    finally:
        _rabbitmqctl("delete_vhost", vhost)


class OwnRedis:
    """A Redis server of the test's own (nothing kept on disk, as the machine's)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        directory.mkdir(parents=True, exist_ok=True)
        self.process: Background | None = None
        self.start()

    def start(self) -> None:
        command = [
            shutil.which("redis-server") or "redis-server",
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
        ]  # fmt: skip
        self.process = Background(command, self.directory / "redis.log")
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class OwnRabbit:
    """A RabbitMQ node of the test's own: its own node name, ports, Mnesia and logs, so it can be
    stopped and started again with its durable queues."""

    def __init__(self, directory: Path, *, consumer_timeout_ms: int = 7_200_000) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "enabled_plugins").write_text("[].\n")
        (directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            f"consumer_timeout = {consumer_timeout_ms}\n"
        )
        self.env = {
            **os.environ,
            "HOME": str(directory),  # NB: its own Erlang cookie
            "RABBITMQ_NODENAME": f"pmrdtest{self.port}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
        }
        self.process: Background | None = None
        self.start()

    def start(self) -> None:
        self.process = Background([RABBITMQ_SERVER], self.directory / "rabbit.log", env=self.env)
        wait_for_port(self.port, self.process, timeout=90)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=60)
