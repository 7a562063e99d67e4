"""Crash safety: ``semrec ingest`` killed with SIGKILL (a real process, a real signal) at
named points and after timed delays, then the same command run again, must end with every
product indexed exactly once, the catalog table equal to the catalog, every feature key of
a catalog row cached, no orphaned points, and ``verify`` finding nothing; a third run
encodes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ingest import image_source, read_catalog
from semrec.cli import app
from semrec.config import load_settings
from semrec.faults import ENV
from semrec.index.verify import verify
from semrec.workspace import Workspace
from tests.conftest import FIXTURES, write_config

CATALOG = FIXTURES / "catalog.csv"
IDS = {p.product_id for p in read_catalog(CATALOG).items}
POINTS = ["model:saved", "edge:created", "ingest:features-cached", "ingest:store-written",
          "ingest:batch-done", "ingest:optimize"]


def ingest(home: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [str(Path(sys.executable).parent / "semrec"), "--home", str(home), "ingest",
               str(CATALOG), "--json"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEMREC_")}
    return subprocess.Popen(command, env={**clean, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def assert_consistent(home: Path) -> None:
    with Workspace(load_settings(home=home), role="test") as ws:
        ids = list(ws.served_store().product_ids())
        assert len(ids) == len(set(ids)) == ws.served_store().count() == len(IDS)
        assert set(ids) == IDS
        rows = list(ws.products.all())
        assert {r.product_id for r in rows} == IDS
        keys = {r.text_key for r in rows} | {r.image_key for r in rows if r.image_key}
        assert not ws.features.missing(keys)
        report = verify(ws, image_source(), read_catalog(CATALOG).items)
        assert report.ok, report.findings[:5]


def rerun_and_check(home: Path) -> str:
    """The same command again (in-process, to skip a second model load), then the checks."""
    result = CliRunner().invoke(app, ["--home", str(home), "ingest", str(CATALOG), "--json"])
    assert result.exit_code == 0, result.output
    assert_consistent(home)
    return result.stdout


@pytest.fixture
def home(tmp_path: Path) -> Path:
    write_config(tmp_path, {"enabled": False})  # text-only: fast, and no CLIP weights here
    return tmp_path


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_a_failpoint_then_rerun_finishes(home: Path, point: str) -> None:
    killed = ingest(home, {ENV: point})
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached"
    rerun_and_check(home)


@pytest.mark.parametrize("delay", [2.0, 4.0])
def test_killed_after_a_delay_then_rerun_finishes(home: Path, delay: float) -> None:
    """Wherever the process happens to be (loading models, encoding, writing). A process
    that ended before the kill would test nothing, so that is a failure."""
    process = ingest(home)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, (
        f"ingest ended (status {process.returncode}) before the kill at {delay} s")
    rerun_and_check(home)


def test_killed_twice_in_a_row_then_rerun_finishes(home: Path) -> None:
    for point in ("ingest:store-written", "ingest:batch-done"):
        ingest(home, {ENV: point}).communicate(timeout=300)
    rerun_and_check(home)
    out = rerun_and_check(home)
    assert '"texts_encoded": 0' in out and '"added": 0' in out
