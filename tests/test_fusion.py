"""The item tower's fusion weights, learnt from events: on synthetic catalogs where
co-purchases follow one modality and the other is noise, the informative one ends up
counting more; untrained towers (and versions saved before the weights were learnt) fuse
with exactly the configured weights; a trained version serves, re-indexes and ingests with
the weights it learnt (tiny CLIP images, SQLite, Qdrant Edge)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ingest import image_source, read_catalog
from semrec.config import TrainSettings, UserSettings, load_settings
from semrec.index import ingest as index_ingest
from semrec.index.stage import embed_cached
from semrec.store import read_vectors
from semrec.towers import ItemTower, ItemTowerConfig, ModelRegistry
from semrec.towers.registry import WEIGHTS
from semrec.training import ItemFeatures, fit, load_home
from semrec.training.reindex import build_version, save_version
from semrec.workspace import Workspace
from tests.conftest import FIXTURES, write_config

N_CATEGORIES, PER_CATEGORY, DIM = 16, 6, 16


def one_modality_data(signal: str, n_users: int = 400, seed: int = 0
                      ) -> tuple[ItemFeatures, list[np.ndarray]]:
    """Every user buys 4 to 7 products of one category. The ``signal`` modality's features
    are noisy copies of the category's centroid; the other modality's are pure noise, so
    only the ``signal`` one can tell which products go together."""
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(N_CATEGORIES, DIM))
    category = np.repeat(np.arange(N_CATEGORIES), PER_CATEGORY)
    good = centroids[category] + rng.normal(size=(len(category), DIM))
    noise = rng.normal(size=(len(category), DIM))
    text, image = (noise, good) if signal == "image" else (good, noise)
    features = ItemFeatures([f"P{i}" for i in range(len(category))], text.astype(np.float32),
                            image.astype(np.float32), np.ones(len(category), bool))
    sequences = []
    for _ in range(n_users):
        c, length = int(rng.integers(N_CATEGORIES)), int(rng.integers(4, 8))
        sequences.append(c * PER_CATEGORY + rng.integers(PER_CATEGORY, size=length))
    return features, sequences


def train(signal: str, **overrides: object):
    features, sequences = one_modality_data(signal)
    settings = TrainSettings(**{"dim": DIM, "epochs": 8, "batch_size": 32, "temperature": 0.1,
                                "user_tower": "pooling", "id_embeddings": False,
                                "max_len": 10, "patience": 100, "threads": 1, **overrides})
    return features, fit(features, sequences, settings, ItemTowerConfig(DIM, DIM, DIM),
                         UserSettings())


def reference(tower: ItemTower, text: np.ndarray, image: np.ndarray, has_image: np.ndarray,
              text_weight: float, image_weight: float) -> np.ndarray:
    """The fusion written out with fixed weights: what the tower computed before they
    were learnt."""
    def unit(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=-1, eps=1e-12)

    with torch.no_grad():
        t = unit(tower.text_head(torch.from_numpy(text)))
        i = unit(tower.image_head(torch.from_numpy(image)))
        mask = torch.from_numpy(has_image).float().unsqueeze(1)
        return unit(text_weight * t + mask * image_weight * i).numpy()


def rows(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize(("signal", "noise"), [("image", "text"), ("text", "image")])
def test_the_modality_co_purchases_follow_learns_the_larger_weight(signal: str,
                                                                   noise: str) -> None:
    _, result = train(signal)
    weights = result.metrics["modality_weights"]
    assert weights[signal] > 1.2 * weights[noise], (weights, result.epochs)
    assert weights == result.item_tower.modality_weights()
    assert result.metrics["valid_recall@10"] > result.metrics["valid_recall@10_untrained"]


def test_fusion_lr_zero_keeps_the_configured_weights() -> None:
    _, result = train("image", fusion_lr=0.0, epochs=2)
    assert result.metrics["modality_weights"] == {"text": 1.0, "image": 1.0}


def test_a_text_only_shop_keeps_its_fusion_weights() -> None:
    """Without images there is no ratio to learn: the weights stay as configured, not walked
    by the optimiser on a zero gradient's rounding noise."""
    features, sequences = one_modality_data("text")
    text_only = ItemFeatures(features.product_ids, features.text)
    settings = TrainSettings(dim=DIM, epochs=3, batch_size=32, temperature=0.1,
                             user_tower="pooling", id_embeddings=False, max_len=10,
                             patience=100, threads=1, fusion_lr=0.05)
    result = fit(text_only, sequences, settings, ItemTowerConfig(DIM, DIM, DIM),
                 UserSettings())
    assert result.metrics["modality_weights"] == {"text": 1.0, "image": 1.0}
    assert result.metrics["valid_recall@10"] > result.metrics["valid_recall@10_untrained"]


def test_a_product_without_an_image_keeps_its_text_vector_after_training() -> None:
    features, result = train("image")
    tower = result.item_tower
    missing = features.has_image.copy()
    missing[:5] = False
    fused = tower.embed(features.text, features.image, missing)
    with torch.no_grad():
        text_only = torch.nn.functional.normalize(
            tower.text_head(torch.from_numpy(features.text[:5])), dim=-1).numpy()
    np.testing.assert_allclose(fused[:5], text_only, atol=1e-6)
    assert not np.allclose(fused[5:10], tower.embed(features.text[5:10]), atol=1e-3)


def test_untrained_tower_fuses_with_exactly_the_configured_weights() -> None:
    config = ItemTowerConfig(text_dim=8, image_dim=4, dim=16, text_weight=0.7, image_weight=1.3)
    tower = ItemTower(config)
    text, image = rows(20, 8, 1), rows(20, 4, 2)
    has_image = np.arange(20) % 3 > 0
    np.testing.assert_array_equal(tower.embed(text, image, has_image),
                                  reference(tower, text, image, has_image, 0.7, 1.3))
    assert tower.modality_weights() == {"text": 0.7, "image": 1.3}


def test_a_version_saved_before_fusion_was_learnt_loads_with_the_configured_weights(
        tmp_path: Path) -> None:
    """Its weights file has no fusion tensor: it reloads and embeds as it always did."""
    registry = ModelRegistry(tmp_path)
    tower = ItemTower(ItemTowerConfig(text_dim=8, image_dim=4, dim=16, image_weight=0.5))
    manifest = registry.save(tower, kind="init", encoders={})
    path = tmp_path / manifest.version / WEIGHTS
    tensors = load_file(path)
    del tensors["item.fusion"]
    save_file(tensors, path)
    loaded, _, _ = registry.load(manifest.version)
    text, image, has_image = rows(10, 8, 3), rows(10, 4, 4), np.ones(10, bool)
    np.testing.assert_array_equal(loaded.embed(text, image, has_image),
                                  reference(tower, text, image, has_image, 1.0, 0.5))


def test_a_saved_trained_tower_embeds_exactly_as_trained(tmp_path: Path) -> None:
    features, result = train("image", epochs=3)
    registry = ModelRegistry(tmp_path)
    manifest = registry.save(result.item_tower, kind="trained", encoders={},
                             metrics=result.metrics)
    loaded, again, _ = registry.load(manifest.version)
    assert loaded.modality_weights() == again.metrics["modality_weights"] != \
        {"text": 1.0, "image": 1.0}
    np.testing.assert_array_equal(
        loaded.embed(features.text, features.image, features.has_image),
        result.item_tower.embed(features.text, features.image, features.has_image))


@pytest.fixture(scope="module")
def image_home(tmp_path_factory: pytest.TempPathFactory, tiny_clip: dict) -> Path:
    """The fixture catalog with tiny-CLIP image features, and its events."""
    home = tmp_path_factory.mktemp("fusion-home")
    write_config(home, tiny_clip)
    settings = load_settings(home=home)
    with Workspace(settings) as ws:
        index_ingest(ws, read_catalog(FIXTURES / "catalog.csv").items, image_source())
    from tests.test_training import semrec

    code, _, stderr = semrec(home, "events", str(FIXTURES / "events.csv"))
    assert code == 0, stderr
    return home


def test_a_trained_version_indexes_and_ingests_with_its_learnt_weights(image_home: Path) -> None:
    """Re-indexing and a later ingest embed through the version's tower, learnt weights
    included: the stored vectors are the trained model's, not the configured fusion's."""
    settings = load_settings(home=image_home)
    with Workspace(settings, own_index=False) as ws:
        image_dim = ws.items(ws.served_version()).tower.config.image_dim
        features, sequences, _ = load_home(ws.conn, image_dim)
        assert features.has_image is not None and features.has_image.all()
        tower = ItemTowerConfig(text_dim=features.text.shape[1], image_dim=image_dim, dim=32)
        train_settings = TrainSettings(dim=32, epochs=3, batch_size=64, user_tower="pooling",
                                       id_embeddings=False, word_embeddings=False,
                                       fusion_lr=0.05, threads=1)
        result = fit(features, sequences, train_settings, tower, settings.user)
        learnt = result.metrics["modality_weights"]
        manifest = save_version(ws, result, features.product_ids, train_settings.model_dump())
        assert manifest.metrics["modality_weights"] == learnt
        assert abs(learnt["image"] / learnt["text"] - 1) > 0.01, learnt
        assert build_version(ws, manifest.version) == 300
        stored, present = read_vectors(ws.store(manifest.version), features.product_ids)
        assert present.all()
        expected = result.item_vectors(features)
        np.testing.assert_allclose(stored, expected, atol=1e-5)
        served = ws.items(manifest.version).tower
        fixed = ItemTower(served.config)
        fixed.load_state_dict({**served.state_dict(), "fusion": torch.zeros(2)})
        configured = fixed.embed(features.text, features.image, features.has_image)
        assert np.abs(stored - configured).max() > 1e-3
        ws.close_store(manifest.version)
    with Workspace(settings) as ws:
        ws.models.promote(manifest.version, ws.store(manifest.version))
    with Workspace(settings) as ws:
        product = read_catalog(FIXTURES / "catalog.csv").items[0]
        index_ingest(ws, [replace(product, title=product.title + " (new edition)")],
                     image_source())
        row = ws.products.get_many([product.product_id])[product.product_id]
        vector = ws.served_store().get([product.product_id])[0].vector
        content = embed_cached(ws.features, ws.items(manifest.version).tower,
                               [row.text_key], [row.image_key])
        untrained = embed_cached(ws.features, fixed, [row.text_key], [row.image_key])
    np.testing.assert_allclose(vector, content[0], atol=1e-5)
    assert np.abs(vector - untrained[0]).max() > 1e-3
    assert row.model_version == manifest.version
