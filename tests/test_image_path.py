"""The image path through open_clip's real loading code, with a tiny random CLIP model
saved to disk by the ``tiny_clip`` fixture, and through the bundled efficientnet-lite0;
the fallbacks without CLIP weights (efficientnet-lite0, or text only); switching image
encoders or weights; image files of every awkward mode and shape."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ingest import image_source, read_catalog
from semrec.config import ImageEncoderSettings, load_settings
from semrec.encoders import EncoderUnavailable, create_image_encoder
from semrec.index import ingest as index_ingest
from semrec.workspace import Workspace
from tests.conftest import FIXTURES, write_config


def ingest(home: Path, catalog: Path = FIXTURES / "catalog.csv", limit: int | None = None):
    with Workspace(load_settings(home=home)) as ws:
        report = index_ingest(ws, read_catalog(catalog).items[:limit], image_source())
        rows = {row.product_id: row for row in ws.products.all()}
        stored = {item.product_id: item.payload for item in ws.served_store().get(sorted(rows))}
    return report, rows, stored


def built_on(home: Path) -> tuple[dict[str, str], set[str]]:
    """The served model's encoders (manifest) and the encoder ids in the feature cache."""
    with Workspace(load_settings(home=home)) as ws:
        manifest = ws.models.manifest(ws.models.current_version())
        query = "SELECT DISTINCT encoder FROM features"
        cached = {encoder for (encoder,) in ws.conn.execute(query)}
    return manifest.encoders, cached


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


def sha16(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def test_switching_image_encoder_reencodes_images_and_no_text(
        tmp_path: Path, tiny_clip: dict) -> None:
    write_config(tmp_path, tiny_clip)
    report, _, _ = ingest(tmp_path)
    assert (report.added, report.texts_encoded, report.images_encoded) == (300, 300, 300)
    _, before = built_on(tmp_path)

    write_config(tmp_path, {"model": "efficientnet-lite0"})
    report, rows, stored = ingest(tmp_path)
    assert (report.updated, report.texts_encoded, report.images_encoded) == (300, 0, 300)
    assert report.image_problem is None and report.image_errors == []
    assert all(payload["modalities"] == ["text", "image"] for payload in stored.values())
    encoders, cached = built_on(tmp_path)
    effnet_id = create_image_encoder(ImageEncoderSettings(model="efficientnet-lite0")).id
    assert encoders["image"] == effnet_id  # a new untrained model, 1280-d heads
    assert cached - before == {effnet_id}

    write_config(tmp_path, tiny_clip)  # and back: every feature is still cached
    report, _, _ = ingest(tmp_path)
    assert (report.updated, report.texts_encoded, report.images_encoded) == (300, 0, 0)
    assert built_on(tmp_path)[0]["image"].startswith(f"open_clip:{tiny_clip['model']}:")


def test_new_weights_for_the_same_model_reencode_images_only(
        tmp_path: Path, tiny_clip: dict) -> None:
    import open_clip
    import torch

    home = tmp_path / "home"
    write_config(home, tiny_clip)
    ingest(home, limit=20)
    torch.manual_seed(1)
    other = tmp_path / "tiny-clip-seed1.pt"
    torch.save(open_clip.create_model(tiny_clip["model"]).state_dict(), other)
    write_config(home, {**tiny_clip, "pretrained": str(other)})
    report, _, _ = ingest(home, limit=20)
    assert (report.updated, report.texts_encoded, report.images_encoded) == (20, 0, 20)
    _, cached = built_on(home)
    image_ids = {i for i in cached if i.startswith("open_clip:")}
    assert image_ids == {f"open_clip:{tiny_clip['model']}:sha256={sha16(path)}"
                         for path in (tiny_clip["pretrained"], other)}
    text_ids = cached - image_ids
    assert len(text_ids) == 1 and next(iter(text_ids)).startswith(
        "sentence-transformers:all-MiniLM-L6-v2:sha256=")


def test_without_clip_weights_efficientnet_stands_in_with_one_warning(
        tmp_path: Path, tiny_clip: dict, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "clip-weights-not-here.pt"
    home = tmp_path / "home"
    write_config(home, {**tiny_clip, "pretrained": str(missing), "fallback": "efficientnet-lite0"})
    with caplog.at_level(logging.WARNING, logger="semrec.encoders"):
        report, rows, _ = ingest(home, limit=24)
        ingest(home, limit=24)  # same config, same process: no second warning
    warnings = [r.getMessage() for r in caplog.records if r.name == "semrec.encoders"]
    assert len(warnings) == 1 and "efficientnet-lite0" in warnings[0]
    assert str(missing) in warnings[0]
    assert report.image_problem is None and report.images_encoded == 24
    assert all(row.modalities == ("text", "image") for row in rows.values())
    encoders, cached = built_on(home)
    assert encoders["image"].startswith("efficientnet-lite:efficientnet-lite0:sha256=")
    assert encoders["image"] in cached

    write_config(home, {**tiny_clip, "fallback": "efficientnet-lite0"})  # CLIP turns up
    report, rows, _ = ingest(home, limit=24)
    assert (report.updated, report.texts_encoded, report.images_encoded) == (24, 0, 24)
    assert built_on(home)[0]["image"].startswith(f"open_clip:{tiny_clip['model']}:")


def awkward_files(folder: Path) -> list[str]:
    """A real fixture image saved in every awkward mode and shape; the file names."""
    from PIL import Image

    folder.mkdir(parents=True)
    base = Image.open(FIXTURES / "images" / "P0001.png").convert("RGB")
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    files = {
        "grey.png": base.convert("L"), "bilevel.png": base.convert("1"),
        "palette.png": palette, "rgba.png": rgba, "la.png": rgba.convert("LA"),
        "grey16.png": Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257),
        "cmyk.jpg": base.convert("CMYK"), "float.tif": base.convert("F"),
        "one-pixel.png": base.resize((1, 1)), "strip.png": base.resize((10_000, 20)),
    }
    for name, image in files.items():
        image.save(folder / name, transparency=0) if name == "palette.png" else image.save(
            folder / name)
    return list(files)


def test_image_files_of_any_mode_and_shape_ingest(tmp_path: Path) -> None:
    from ingest import load_image

    names = awkward_files(tmp_path / "images")
    grey16 = load_image(tmp_path / "images" / "grey16.png")
    assert grey16.mode == "RGB" and np.asarray(grey16).max() < 255  # scaled, not clipped
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps({"product_id": f"A{i}", "title": f"Awkward {name}",
                                           "image": f"images/{name}"}) + "\n"
                               for i, name in enumerate(names)))
    home = tmp_path / "home"
    write_config(home, {"model": "efficientnet-lite0"})
    report, rows, _ = ingest(home, catalog)
    assert report.image_errors == [] and report.image_problem is None
    assert (report.added, report.images_encoded) == (len(names), len(names))
    assert all(row.modalities == ("text", "image") for row in rows.values())
