"""Shared fixtures: simulated samples written once per test session (per xdist worker)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# NB: the suite runs pipelines in-process and in worker subprocesses; all of them use the
# install's compiled-kernel cache, which `make venv` warms, as the CLI does (precise_mrd.cli
# default_kernel_cache). Set before any test module imports numba, which reads it once.
if "NUMBA_CACHE_DIR" not in os.environ and os.access(sys.prefix, os.W_OK):
    os.environ["NUMBA_CACHE_DIR"] = str(Path(sys.prefix) / "numba-cache")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def smoke_sample(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A smoke-preset sample with FASTQ, tumour fraction 1e-3 (seed 11)."""
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.pipeline.simulation import simulate_sample

    out_dir = tmp_path_factory.mktemp("smoke_sample")
    params = SimulationParams.preset("smoke", seed=11, tumor_fraction=1e-3)
    return simulate_sample(out_dir, params, write_fastq=True)


SHARED_DATA_HINT = (
    f"{SHARED_DATA} is missing: tests marked shared_data read the real third-party files laid "
    "beside the project as ../shared/data (see its README.md: UMI-tools' chr19 reads and its "
    "own grouping of them, MIT). Check out or copy shared/ next to the project root and re-run."
)


class MissingSharedData(pytest.Item):
    """Stands in, as one failing test, for every shared_data test when ../shared/data is absent."""

    def __init__(self, *, n_needing: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.n_needing = n_needing

    def runtest(self) -> None:
        pytest.fail(f"{self.n_needing} tests not run: {SHARED_DATA_HINT}", pytrace=False)

    def reportinfo(self):  # type: ignore[no-untyped-def]
        return self.path, None, "shared data"


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    needing = [item for item in items if item.get_closest_marker("shared_data")]
    if not needing or SHARED_DATA.is_dir():
        return
    config.hook.pytest_deselected(items=needing)
    items[:] = [item for item in items if not item.get_closest_marker("shared_data")]
    items.append(
        MissingSharedData.from_parent(session, name="shared_data_missing", n_needing=len(needing))
    )


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
    ids=["sqlite", "postgresql"],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty job database on each backend: a SQLite file, then a PostgreSQL database of the
    test's own on the machine's server (tests/databases.py)."""
    from databases import database_url

    with database_url(request.param, tmp_path / "db") as url:
        yield url
