"""Entry points and operability of the API: CLI options, JSON logs, templates, upload sniffing."""

from __future__ import annotations

import gzip
import json
import warnings
import zlib
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi import Request
from typer.testing import CliRunner

from precise_mrd.api import parse_args
from precise_mrd.cli_serve import register
from precise_mrd.core.errors import ConfigError
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.service.api.uploads import safe_file_name, sniff
from precise_mrd.service.errors import UploadInvalidError
from precise_mrd.service.templates import TEMPLATES, merge_overrides, params_from_template

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


def test_api_module_options() -> None:
    args = parse_args(["--host", "0.0.0.0", "--port", "9000", "--reload", "--log-level", "DEBUG"])
    assert (args.host, args.port, args.reload, args.log_level) == ("0.0.0.0", 9000, True, "debug")
    defaults = parse_args([])
    assert defaults.host is None and defaults.port is None and not defaults.reload
    with pytest.raises(SystemExit):
        parse_args(["--log-level", "loud"])


def test_serve_command_is_registered_with_the_same_options() -> None:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # NB: a second command keeps typer in multi-command mode
        """Placeholder."""

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--host", "--port", "--reload", "--log-level"):
        assert option in result.output
    result = CliRunner().invoke(app, ["serve", "--log-level", "loud"])
    assert result.exit_code != 0 and "not a log level" in result.output


def test_json_logs_carry_the_request_id_and_honour_the_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from precise_mrd.service.app import create_app
    from precise_mrd.service.jobs.memory import InMemoryJobService
    from precise_mrd.service.settings import Settings
    from precise_mrd.service.storage import LocalArtifactStore

    for level, expect_debug in (("warning", False), ("info", True)):
        app = create_app(
            Settings(data_dir=tmp_path, log_level=level),
            job_service=InMemoryJobService(),
            store=LocalArtifactStore(tmp_path / "a"),
            start_executor=False,
        )
        capsys.readouterr()
        with TestClient(app) as client:
            client.get("/health/live", headers={"X-Request-ID": "req-42"})
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        events = [json.loads(line) for line in lines]
        access = [event for event in events if event.get("event") == "request"]
        if expect_debug:
            assert access and access[0]["request_id"] == "req-42"
            assert access[0]["route"] == "/health/live" and access[0]["status"] == 200
        else:
            assert access == []  # info-level access lines are filtered at warning


def test_every_template_is_valid_and_described() -> None:
    for name, template in TEMPLATES.items():
        params = params_from_template(name)
        assert isinstance(params, PipelineParams) and len(template.description) > 30
    assert TEMPLATES["duplex-high-depth"].mapping()["consensus"]["min_reads"] == [3, 1, 1]
    assert all(template.is_runnable for template in TEMPLATES.values())
    assert "validation" in TEMPLATES["validation-dilution"].mapping()
    with pytest.raises(ConfigError, match="unknown template"):
        params_from_template("nope")
    with pytest.raises(ConfigError) as raised:
        params_from_template("smoke", {"umi": {"strategy": "bogus"}})
    assert raised.value.path == "umi.strategy"


def test_merge_overrides_nested_and_dotted() -> None:
    base = {"calling": {"alpha": 0.05, "n_bootstrap": 200}, "seed": 1}
    merged = merge_overrides(base, {"calling": {"alpha": 0.1}, "umi.strategy": "edit"})
    assert merged == {
        "calling": {"alpha": 0.1, "n_bootstrap": 200},
        "seed": 1,
        "umi": {"strategy": "edit"},
    }
    assert base["calling"] == {"alpha": 0.05, "n_bootstrap": 200}  # not mutated
    with pytest.raises(ConfigError):
        merge_overrides(base, {"calling..alpha": 1})


def _bgzf(payload: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = compressor.compress(payload) + compressor.flush()
    import struct

    header = b"\x1f\x8b\x08\x04" + b"\x00" * 4 + b"\x00\xff\x06\x00BC\x02\x00"
    header += struct.pack("<H", len(body) + 25)
    return header + body + struct.pack("<II", zlib.crc32(payload), len(payload))


@pytest.mark.parametrize(
    ("field", "head", "kind"),
    [
        ("reads", None, "bam"),
        ("reads", b"@r1\nACGT\n+\nIIII\n", "fastq"),
        ("reads", gzip.compress(b"@r1\nACGT\n+\nIIII\n"), "fastq.gz"),
        ("reads_r2", b"\n@r1\nACGT\n", "fastq"),
        ("reference", b">chr1\nACGT\n", "fasta"),
        ("reference", gzip.compress(b">chr1\nACGT\n"), "fasta.gz"),
        ("variants", b"##fileformat=VCFv4.2\n#CHROM\n", "vcf"),
        ("variants", b"#chrom,pos,ref,alt,af\nchr1,5,A,C,0.2\n", "tsv"),
        ("targets", b"track name=x\nchr1\t10\t200\n", "bed"),
    ],
    # NB: explicit ids: the heads hold gzip bytes whose header embeds the current time, and
    # xdist workers that collect different ids abort the run before a test starts.
    ids=[
        "bam",
        "fastq",
        "fastq-gz",
        "fastq-r2-leading-blank",
        "fasta",
        "fasta-gz",
        "vcf",
        "csv-variants",
        "bed-with-track",
    ],
)
def test_sniff_accepts(field: str, head: bytes | None, kind: str) -> None:
    data = _bgzf(b"BAM\x01" + b"\x00" * 8) if head is None else head
    assert sniff(field, data) == kind


@pytest.mark.parametrize(
    ("field", "head", "problem"),
    [
        ("reads", b"", "empty"),
        ("reads", b"\x1f\x8bnot really gzip", "does not decompress"),
        ("reads", b"@HD\tVN:1.6\n", "is SAM text"),
        ("reads_r2", b">chr1\n", "not a FASTQ"),
        ("reference", b"@r1\n", "not a FASTA"),
        ("variants", b"chrom\tstart\n", "neither a VCF"),
        ("targets", b"chr1\tten\t20\n", "not a BED"),
    ],
    ids=[
        "empty",
        "bad-gzip",
        "sam-text",
        "r2-not-fastq",
        "reference-not-fasta",
        "variants-unknown",
        "bed-bad-start",
    ],
)
def test_sniff_rejects(field: str, head: bytes, problem: str) -> None:
    with pytest.raises(UploadInvalidError) as raised:
        sniff(field, head)
    assert raised.value.field == field and problem in raised.value.message


def test_safe_file_names() -> None:
    assert safe_file_name("reads", "/abs/path/x.bam") == "x.bam"
    assert safe_file_name("reads", None) == "reads"
    for bad in ("../x.bam", "a/../b", "x\x00.bam", "x\n.bam", "dir/"):
        with pytest.raises(UploadInvalidError):
            safe_file_name("reads", bad)


def test_the_server_runs_on_the_configured_event_loop_and_names_a_bad_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvicorn

    from precise_mrd.api import serve

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setenv("PRECISE_MRD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PRECISE_MRD_EVENT_LOOP", raising=False)
    serve(port=0)
    monkeypatch.setenv("PRECISE_MRD_EVENT_LOOP", "uvloop")
    serve(port=0)
    assert [call["loop"] for call in calls] == ["asyncio", "uvloop"]
    monkeypatch.setenv("PRECISE_MRD_EVENT_LOOP", "fastest")
    with pytest.raises(SystemExit) as refused:
        serve(port=0)
    assert str(refused.value) == (
        "error: PRECISE_MRD_EVENT_LOOP: Input should be 'asyncio' or 'uvloop' (got 'fastest')"
    )
    assert len(calls) == 2


def test_a_server_process_freezes_what_start_up_built(tmp_path: Path) -> None:
    import gc

    from precise_mrd.service.app import create_app
    from precise_mrd.service.jobs.memory import InMemoryJobService
    from precise_mrd.service.settings import Settings
    from precise_mrd.service.storage import LocalArtifactStore

    def app(freeze: bool) -> object:
        return create_app(
            Settings(data_dir=tmp_path),
            job_service=InMemoryJobService(),
            store=LocalArtifactStore(tmp_path / "a"),
            start_executor=False,
            freeze_heap_on_start=freeze,
        )

    assert gc.get_freeze_count() == 0
    with TestClient(app(False)) as client:
        assert client.get("/health/live").status_code == 200
        assert gc.get_freeze_count() == 0  # NB: apps built in tests and notebooks never freeze
    try:
        with TestClient(app(True)) as client:
            assert client.get("/health/live").status_code == 200
            assert gc.get_freeze_count() > 10_000  # the imported libraries, at least
    finally:
        gc.unfreeze()


def test_a_server_process_freezes_the_readers_a_submission_imports(tmp_path: Path) -> None:
    """Imported by the first submission instead, numba's and pysam's objects would stay in the
    collector's reach and lengthen every full collection (a fresh interpreter: this one has
    imported them long ago)."""
    import subprocess
    import sys

    code = f"""
import gc, warnings
warnings.simplefilter("ignore")
from fastapi.testclient import TestClient
from precise_mrd.service.app import create_app
from precise_mrd.service.jobs.memory import InMemoryJobService
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import LocalArtifactStore
app = create_app(Settings(data_dir={str(tmp_path)!r}), job_service=InMemoryJobService(),
                 store=LocalArtifactStore({str(tmp_path / "a")!r}), start_executor=False,
                 freeze_heap_on_start=True)
with TestClient(app):
    from precise_mrd.io.bam import open_bam
    print("collectable", any(o is open_bam for o in gc.get_objects()))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["collectable", "False"], done.stdout


def test_every_module_validate_uploads_imports_is_a_reader_module() -> None:
    """A reader added to ``validate_uploads`` but not to ``READER_MODULES`` would be imported by
    the first submission, after the freeze: this test names it."""
    import ast
    import inspect
    import textwrap

    from precise_mrd.service.api import uploads

    tree = ast.parse(textwrap.dedent(inspect.getsource(uploads.validate_uploads)))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert imported, "validate_uploads imports nothing locally any more: drop READER_MODULES"
    assert imported <= set(uploads.READER_MODULES), imported - set(uploads.READER_MODULES)


def test_connections_accepted_from_a_protocol_zero_socket_send_without_delay() -> None:
    """uvicorn's ``--workers N`` listening socket has protocol number 0, so asyncio leaves
    Nagle's algorithm on for what it accepts; the server's protocol turns it off."""
    import asyncio
    import socket

    from precise_mrd.service.serving import _send_without_delay

    async def accepted_nodelay() -> tuple[int, int]:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # NB: proto 0, as uvicorn's
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        made: asyncio.Future[asyncio.BaseTransport] = asyncio.get_running_loop().create_future()

        class Keep(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                made.set_result(transport)

        server = await asyncio.get_running_loop().create_server(Keep, sock=listener)
        client = socket.create_connection(listener.getsockname())
        try:
            transport = await asyncio.wait_for(made, 5)
            sock = transport.get_extra_info("socket")
            before = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            _send_without_delay(transport)
            after = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            transport.close()
            return before, after
        finally:
            client.close()
            server.close()
            await server.wait_closed()

    before, after = asyncio.run(accepted_nodelay())
    assert before == 0 and after != 0


async def _status_like(request: Request, job_id: str) -> Any:
    from fastapi import Response

    if job_id == "boom":
        from precise_mrd.service.errors import NotFoundError

        raise NotFoundError("no such thing", fix="ask for another")
    return Response(f'{{"job_id": "{job_id}"}}', media_type="application/json")


async def _with_query(request: Request, job_id: str, limit: int = 5) -> Any: ...


async def _int_path(request: Request, job_id: int) -> Any: ...


def _sync(request: Request, job_id: str) -> Any: ...


async def _untyped_request(request: Any, job_id: str) -> Any: ...


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/x/{job_id}", _with_query),
        ("/x/{job_id}", _int_path),
        ("/x/{job_id:int}", _status_like),
        ("/x/{job_id}", _sync),
        ("/x/{other}", _status_like),
        ("/x/{job_id}", _untyped_request),
    ],
)
def test_request_route_refuses_an_endpoint_it_would_call_wrongly(path: str, endpoint: Any) -> None:
    from fastapi import APIRouter

    from precise_mrd.service.api.routing import RequestRoute

    with pytest.raises(TypeError, match="RequestRoute endpoint takes request"):
        APIRouter().add_api_route(path, endpoint, route_class_override=RequestRoute)


def test_request_route_calls_with_path_parameters_and_errors_go_to_the_handlers() -> None:
    from fastapi import FastAPI

    from precise_mrd.service.api.routing import RequestRoute
    from precise_mrd.service.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)
    app.router.add_api_route("/x/{job_id}", _status_like, route_class_override=RequestRoute)
    client = TestClient(app)
    assert client.get("/x/abc?limit=3").json() == {"job_id": "abc"}
    missing = client.get("/x/boom")
    assert missing.status_code == 404 and missing.json()["error"]["fix"] == "ask for another"
    parameters = app.openapi()["paths"]["/x/{job_id}"]["get"]["parameters"]
    assert [(p["name"], p["in"]) for p in parameters] == [("job_id", "path")]
