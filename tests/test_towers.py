"""Towers: the untrained item tower keeps the frozen text geometry; versions round-trip;
user pooling weighs recent and strong events more."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from semrec.config import UserSettings
from semrec.towers import ItemTower, ItemTowerConfig, ModelRegistry
from semrec.towers.sequential import SequentialConfig, SequentialUserTower
from semrec.towers.user import history_weights, pool


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_untrained_text_head_is_an_isometry_of_the_text_space() -> None:
    text = unit_rows(50, 384)
    tower = ItemTower(ItemTowerConfig(text_dim=384, image_dim=16, dim=384))
    vectors = tower.embed(text)
    np.testing.assert_allclose(vectors @ vectors.T, text @ text.T, atol=1e-5)


def test_image_term_only_where_a_product_has_an_image() -> None:
    tower = ItemTower(ItemTowerConfig(text_dim=8, image_dim=4, dim=16))
    text, image = unit_rows(3, 8), unit_rows(3, 4, seed=1)
    fused = tower.embed(text, image, np.array([True, False, True]))
    text_only = tower.embed(text)
    np.testing.assert_allclose(fused[1], text_only[1], atol=1e-6)
    assert not np.allclose(fused[0], text_only[0])
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, rtol=1e-5)


def test_saved_version_reloads_identically(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    tower = ItemTower(ItemTowerConfig(text_dim=8, image_dim=4, dim=16, seed=3))
    manifest = registry.save(tower, kind="init", encoders={"text": "t", "image": "i"})
    assert registry.current_version() is None
    registry.promote(manifest.version)
    assert registry.current_version() == manifest.version
    loaded, again, _ = registry.load(manifest.version)
    assert again == manifest and loaded.config == tower.config
    text = unit_rows(5, 8)
    np.testing.assert_array_equal(loaded.embed(text), tower.embed(text))
    other = registry.save(ItemTower(ItemTowerConfig(8, 4, 16, seed=4)), "init", {})
    assert other.version != manifest.version  # the version names the weights


def test_recency_weights_halve_every_half_life() -> None:
    settings = UserSettings(half_life=2.0, event_weights={"purchase": 1.0, "view": 0.5})
    weights = history_weights(["purchase", "view", "purchase"], settings)
    np.testing.assert_allclose(weights, [0.5, 0.5 * 2 ** -0.5, 1.0])
    mean = history_weights(["purchase", "view"], settings.model_copy(update={"pooling": "mean"}))
    np.testing.assert_allclose(mean, [1.0, 0.5])


def test_pool_is_the_normalised_weighted_mean() -> None:
    vectors = np.eye(3, dtype=np.float32)
    pooled = pool(vectors, np.array([1.0, 1.0, 2.0]))
    np.testing.assert_allclose(pooled, np.array([1, 1, 2]) / np.sqrt(6), rtol=1e-6)
    assert not pool(vectors, np.zeros(3)).any()


@pytest.mark.parametrize("value", ["0", "-3"])
def test_invalid_config_is_refused_at_load(tmp_path: Path, value: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from semrec.config import ConfigError, load_settings

    monkeypatch.setenv("SEMREC_USER__HALF_LIFE", value)
    with pytest.raises(ConfigError, match="half_life"):
        load_settings(home=tmp_path)


def test_env_outranks_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from semrec.config import load_settings

    (tmp_path / "semrec.toml").write_text("[tower]\ndim = 128\n[user]\nhalf_life = 4\n")
    monkeypatch.setenv("SEMREC_TOWER__DIM", "64")
    settings = load_settings(home=tmp_path)
    assert settings.tower.dim == 64 and settings.user.half_life == 4 and settings.home == tmp_path


def test_untrained_sequential_tower_is_the_causal_mean() -> None:
    """Before training, the transformer's branch adds nothing: the user after event t is the
    normalised mean of events 0..t, so training starts from the mean pooling."""
    torch.manual_seed(0)
    tower = SequentialUserTower(SequentialConfig(dim=16, max_len=8)).eval()
    items = torch.nn.functional.normalize(torch.randn(3, 5, 16), dim=-1)
    mean = torch.cumsum(items, dim=1) / torch.arange(1, 6)[None, :, None]
    expected = torch.nn.functional.normalize(mean, dim=-1)
    assert torch.allclose(tower(items), expected, atol=1e-6)


def test_because_comes_from_the_tower_that_scored_the_feed() -> None:
    """History: product A viewed (weight 0.3), product B bought (weight 1); the candidate is
    closer to A (cos 0.9) than to B (cos 0.44). The pooling tower weighs events by type, so
    B adds more to the score; the sequential tower ignores event types (untrained, it is the
    plain mean), and leaving A out costs the candidate most: A."""
    from semrec.serving.rerank import because
    from semrec.towers.user import PoolingUserTower, SequentialTower

    a, b = np.eye(8, dtype=np.float32)[:2]
    candidate = (0.9 * a + np.sqrt(1 - 0.81) * b)[None]
    history, events = np.stack([a, b]), ["view", "purchase"]
    pooling = PoolingUserTower(UserSettings(pooling="mean"))
    torch.manual_seed(0)
    sequential = SequentialTower(SequentialUserTower(SequentialConfig(dim=8, layers=1, heads=1)))
    assert because(["A", "B"], pooling.contributions(history, events, candidate)) == ["B"]
    assert because(["A", "B"], sequential.contributions(history, events, candidate)) == ["A"]


def test_a_pooling_trained_version_pools_as_it_was_trained() -> None:
    """The manifest's pooling settings win over the config's: a version trained with plain
    mean pooling serves the plain mean even where the config says recency."""
    from semrec.towers import ModelManifest
    from semrec.towers.user import load_user_tower

    manifest = ModelManifest(version="v", kind="trained", created=0.0, item_tower={},
                             encoders={}, user_tower={"kind": "pooling", "pooling": "mean",
                                                      "half_life": 3.0})
    tower = load_user_tower(manifest, {}, UserSettings(pooling="recency", half_life=1.0))
    history = unit_rows(3, 8)
    mean = history.mean(axis=0)
    np.testing.assert_allclose(tower.user_vector(history, ["purchase"] * 3),
                               mean / np.linalg.norm(mean), atol=1e-6)
