"""The image path through open_clip's real loading code, with a tiny random CLIP model
saved to disk by the ``tiny_clip`` fixture; and the text-only fallback without weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingest import image_source, read_catalog
from semrec.config import load_settings
from semrec.encoders import EncoderUnavailable, create_image_encoder
from semrec.serving.context import Semrec
from tests.conftest import FIXTURES, write_config


def ingest(home: Path, catalog: Path = FIXTURES / "catalog.csv"):
    with Semrec(load_settings(home=home)) as sr:
        report = sr.builder(image_source()).ingest(read_catalog(catalog).items)
        rows = {row.product_id: row for row in sr.products.all()}
        stored = {item.product_id: item.payload for item in sr.store.get(sorted(rows))}
    return report, rows, stored


def test_tiny_clip_encodes_images_with_its_own_preprocessing(tiny_clip: dict) -> None:
    settings = load_settings(home="unused")
    settings = settings.model_copy(update={"image": settings.image.model_copy(update=tiny_clip)})
    encoder = create_image_encoder(settings.image)
    from PIL import Image

    images = [Image.open(FIXTURES / "images" / f"P000{i}.png").convert("RGB") for i in (1, 2)]
    vectors = encoder.encode_image(images)
    assert vectors.shape == (2, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert encoder.preprocess is not None and "image" in encoder.modalities


def test_catalog_indexed_with_images(tmp_path: Path, tiny_clip: dict) -> None:
    write_config(tmp_path, tiny_clip)
    report, rows, stored = ingest(tmp_path)
    assert report.image_problem is None and report.image_errors == []
    assert (report.added, report.texts_encoded, report.images_encoded) == (300, 300, 300)
    assert all(row.modalities == ("text", "image") for row in rows.values())
    assert all(payload["modalities"] == ["text", "image"] for payload in stored.values())


def test_missing_weights_fall_back_to_text_then_a_later_run_adds_images(
        tmp_path: Path, tiny_clip: dict) -> None:
    write_config(tmp_path, {**tiny_clip, "pretrained": str(tmp_path / "not-there.pt")})
    report, rows, _ = ingest(tmp_path)
    assert report.added == 300 and report.images_encoded == 0
    assert "not-there.pt" in report.image_problem and "SEMREC_IMAGE__PRETRAINED" in (
        report.image_problem)
    assert all(row.modalities == ("text",) for row in rows.values())

    write_config(tmp_path, tiny_clip)  # the weights turn up
    report, rows, stored = ingest(tmp_path)
    assert report.image_problem is None
    assert (report.updated, report.images_added, report.texts_encoded) == (300, 300, 0)
    assert all(row.modalities == ("text", "image") for row in rows.values())
    assert all(payload["modalities"] == ["text", "image"] for payload in stored.values())


def test_unloadable_weights_raise_a_clear_error(tiny_clip: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    settings = load_settings(home=tmp_path)
    image = settings.image.model_copy(update={**tiny_clip, "pretrained": str(broken)})
    with pytest.raises(EncoderUnavailable, match="SEMREC_IMAGE__PRETRAINED"):
        create_image_encoder(image)


def test_unreadable_image_is_reported_and_product_indexed_from_text(
        tmp_path: Path, tiny_clip: dict) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text('{"product_id": "X1", "title": "Espresso machine", '
                       '"image": "images/bad.png"}\n')
    home = tmp_path / "home"
    write_config(home, tiny_clip)
    report, rows, stored = ingest(home, catalog)
    assert report.added == 1 and [pid for pid, _ in report.image_errors] == ["X1"]
    assert rows["X1"].modalities == ("text",) and stored["X1"]["title"] == "Espresso machine"
