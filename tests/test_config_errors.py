"""A bad config value is one line on stderr and exit status 1, never a traceback: for
every section of the config tree, through the command a user would run first."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from semrec.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("SEMREC_IMAGE__MODEL", "typo", "typo"),
    ("SEMREC_IMAGE__MODEL_CONFIG_FILE", "/no/such/config.json", "config"),
    ("SEMREC_IMAGE__MAX_PIXELS", "many", "image.max_pixels"),
    ("SEMREC_TEXT__MODEL", "/no/such/text-model", "text-model"),
    ("SEMREC_TEXT__BATCH_SIZE", "0", "text.batch_size"),
    ("SEMREC_TOWER__DIM", "abc", "tower.dim"),
    ("SEMREC_USER__POOLING", "median", "user.pooling"),
    ("SEMREC_USER__EVENT_WEIGHTS", "{not json", "user"),
    ("SEMREC_FEED__NEW_PRODUCT_BOOST", "-1", "feed.new_product_boost"),
    ("SEMREC_TRAIN__LOSS", "exact", "train.loss"),
    ("SEMREC_API__MAX_BODY_BYTES", "1", "api.max_body_bytes"),
    ("SEMREC_STORE", "ftp://qdrant:6333", "store URL"),
])
def test_a_bad_config_value_is_one_line_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   variable: str, value: str, says: str) -> None:
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("product_id,title\nA1,Red dress\n", encoding="utf-8")
    monkeypatch.setenv("SEMREC_IMAGE__ALLOW_DOWNLOAD", "false")
    monkeypatch.setenv(variable, value)
    result = runner.invoke(app, ["--home", str(tmp_path / "home"), "ingest", str(catalog)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], lines
