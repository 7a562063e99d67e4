"""The image path through open_clip's real loading code, with a tiny random CLIP model
saved to disk by the ``tiny_clip`` fixture; and the text-only fallback without weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingest import image_source, read_catalog
from semrec.config import load_settings
from semrec.encoders import EncoderUnavailable, create_image_encoder
from semrec.index import ingest as index_ingest
from semrec.workspace import Workspace
from tests.conftest import FIXTURES, write_config


def ingest(home: Path, catalog: Path = FIXTURES / "catalog.csv"):
    with Workspace(load_settings(home=home)) as ws:
        report = index_ingest(ws, read_catalog(catalog).items, image_source())
        rows = {row.product_id: row for row in ws.products.all()}
        stored = {item.product_id: item.payload for item in ws.served_store().get(sorted(rows))}
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


def test_new_image_weights_re_encode_every_image_and_never_mix_spaces(
        tmp_path: Path, tiny_clip: dict) -> None:
    """Other weights for the same image model: the next ingest, even of one new product,
    moves the whole catalog into a new version whose images all come from the new weights
    (texts stay cached); ``verify`` under the old config then sees the mix it would be."""
    import torch

    weights_b = tmp_path / "tiny-clip-b.pt"
    state = torch.load(tiny_clip["pretrained"])
    torch.save({k: v * 1.5 if v.is_floating_point() else v for k, v in state.items()},
               weights_b)
    home = tmp_path / "home"
    write_config(home, tiny_clip)
    report, rows, _ = ingest(home)
    first = report.model_version
    write_config(home, {**tiny_clip, "pretrained": str(weights_b)})
    new = tmp_path / "new.jsonl"
    new.write_text('{"product_id": "Z1", "title": "Linen summer dress", "image": "'
                   f'{FIXTURES / "images" / "P0001.png"}"}}\n', encoding="utf-8")
    with Workspace(load_settings(home=home)) as ws:
        report = index_ingest(ws, read_catalog(new, image_roots=[FIXTURES]).items,
                              image_source())
        encoders = {e for (e,) in ws.conn.execute(
            "SELECT DISTINCT f.encoder FROM products p JOIN features f ON f.key = p.image_key")}
        versions = {item.payload["model_version"] for item in
                    ws.served_store().get(sorted(r.product_id for r in ws.products.all()))}
    assert report.switched_from == (first, "init") and report.model_version != first
    assert (report.added, report.updated, report.texts_encoded) == (1, 300, 1)
    assert report.images_encoded == 300  # P0001.png again: cached with the new weights
    assert encoders == {ws.encoders.ids()["image"]} and versions == {report.model_version}

    write_config(home, tiny_clip)  # the old weights again: every product is foreign to them
    from semrec.index.verify import verify

    with Workspace(load_settings(home=home)) as ws:
        found = verify(ws, image_source()).by_kind()
    assert found["foreign_encoder"] == 301
