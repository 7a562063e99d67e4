"""Tests for ``semrec.training`` and the trained towers, on data with a known answer and real
components: the training core on a synthetic catalog whose next purchase follows a cycle of
categories, and ``semrec train`` end to end on the fixture home (bundled MiniLM features,
SQLite, Qdrant Edge)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ingest import image_source, read_catalog
from semrec.cli import app
from semrec.config import TrainSettings, UserSettings, load_settings
from semrec.index import ingest as index_ingest
from semrec.index.stage import embed_cached
from semrec.serving.recommender import Recommender, open_recommender
from semrec.store import Filters
from semrec.towers import ItemTowerConfig
from semrec.towers.item import add_terms
from semrec.towers.sequential import user_vectors
from semrec.towers.user import PoolingUserTower, SequentialTower
from semrec.towers.words import product_words
from semrec.training import ItemFeatures, Validation, fit, holdout_last, load_home
from semrec.training.cli import served_score
from semrec.training.data import event_weights
from semrec.training.model import PoolingUsers, SampledSoftmax
from semrec.training.reindex import build_version, save_version, serve_version
from semrec.training.trainer import Training, WeightAverage
from semrec.workspace import Workspace
from tests.conftest import FIXTURES, write_config

runner = CliRunner()

# --- the training core on a cycle of categories ------------------------------------------------

N_CATEGORIES, PER_CATEGORY, FEATURE_DIM = 8, 6, 16


def cycle_data(n_users: int = 500, seed: int = 0) -> tuple[ItemFeatures, list[np.ndarray]]:
    """Products are noisy copies of their category's centroid; every user walks the categories
    in order (c, c+1, c+2, ...), buying a random product of each. The next purchase's category
    is certain from the last one, and no symmetric similarity can tell c+1 from c-1."""
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(N_CATEGORIES, FEATURE_DIM))
    category = np.repeat(np.arange(N_CATEGORIES), PER_CATEGORY)
    text = (centroids[category] + 0.3 * rng.normal(size=(len(category), FEATURE_DIM)))
    features = ItemFeatures([f"P{i}" for i in range(len(category))], text.astype(np.float32))
    sequences = []
    for _ in range(n_users):
        start, length = int(rng.integers(N_CATEGORIES)), int(rng.integers(5, 9))
        cats = (start + np.arange(length)) % N_CATEGORIES
        sequences.append(cats * PER_CATEGORY + rng.integers(PER_CATEGORY, size=length))
    return features, sequences


def train_cycle(user_tower: str, **overrides: object):
    features, sequences = cycle_data()
    values = {"dim": 16, "epochs": 12, "batch_size": 64, "negatives": 16, "lr": 5e-3,
              "temperature": 0.1, "max_len": 10, "layers": 1, "heads": 2, "dropout": 0.1,
              "patience": 4, "threads": 1, **overrides}
    settings = TrainSettings(user_tower=user_tower, **values)
    tower = ItemTowerConfig(text_dim=FEATURE_DIM, image_dim=8, dim=16)
    return features, fit(features, sequences, settings, tower, UserSettings())


def test_sequential_tower_learns_the_order_pooling_cannot() -> None:
    _, sequential = train_cycle("sequential")
    _, pooling = train_cycle("pooling")
    seq_recall = sequential.metrics["valid_recall@10"]
    pool_recall = pooling.metrics["valid_recall@10"]
    assert seq_recall > 0.9, sequential.epochs
    assert seq_recall > pool_recall + 0.2, (seq_recall, pool_recall)
    assert seq_recall > sequential.metrics["valid_recall@10_untrained"]
    assert sequential.epochs[0]["loss"] > sequential.epochs[-1]["loss"]


def test_full_softmax_learns_the_order_too() -> None:
    _, full = train_cycle("sequential", loss="full")
    assert full.metrics["valid_recall@10"] > 0.9, full.epochs


def test_full_softmax_candidates_are_every_trained_product() -> None:
    """Every product with training events is a candidate, in index order (no sampling, so no
    logQ); a product only ever seen outside training is not one."""
    task = SampledSoftmax(np.array([3, 0, 2, 5]), negatives=8, temperature=0.1, logq=True,
                          seen=np.array([True, False, True, True]), full=True)
    candidates, labels = task.candidates(torch.tensor([3, 0, 2, 3]), torch.Generator())
    assert candidates.tolist() == [0, 2, 3]
    assert labels.tolist() == [2, 0, 1, 2]
    assert not task.logq


def test_training_is_deterministic_for_a_seed() -> None:
    features, a = train_cycle("sequential", epochs=2, id_embeddings=True)
    _, b = train_cycle("sequential", epochs=2, id_embeddings=True)
    assert np.allclose(a.item_vectors(features), b.item_vectors(features), atol=1e-6)
    assert a.metrics["valid_recall@10"] == b.metrics["valid_recall@10"]


def test_learning_rate_anneals_by_epoch_number() -> None:
    """Epoch ``e`` trains at ``lr * lr_decay ** (e - 1)``: a schedule by epoch number alone,
    which a refit of the same epochs replays. A vanishing decay leaves the model as its first
    epoch made it."""
    features, sequences = cycle_data(n_users=200)
    settings = TrainSettings(dim=16, epochs=3, batch_size=64, negatives=16, max_len=10,
                             layers=1, lr=0.01, lr_decay=0.5, threads=1)
    tower = ItemTowerConfig(text_dim=FEATURE_DIM, image_dim=8, dim=16)
    run = Training(features, sequences, settings, tower, UserSettings())
    rates = []
    for _ in range(3):
        rates.append([group["lr"] for group in run.optimiser.param_groups])
        run.epoch()
    assert rates == [[0.01], [0.005], [0.0025]]

    frozen = Training(features, sequences, settings.model_copy(update={"lr_decay": 1e-9}),
                      tower, UserSettings())
    before = frozen.items.all_vectors().clone()
    frozen.epoch()
    after_one = frozen.items.all_vectors().clone()
    frozen.epoch()
    assert not torch.allclose(after_one, before, atol=1e-3)  # the first epoch trains
    assert torch.allclose(frozen.items.all_vectors(), after_one, atol=1e-6)


def test_weight_average_is_an_exponential_average_of_the_steps() -> None:
    """Horizon 2 epochs of 2 steps: decay 0.75, reached from the warm-up's (1 + n) / (10 + n)
    at n = 26. From 0, a step to 11 averages to (1 - 2/11) * 11 = 9 (n = 1); at n = 30 the
    decay is 0.75: a step to 13 from an average of 9 gives 0.75 * 9 + 0.25 * 13 = 10.
    ``applied`` swaps the average in for its block only, ``load`` for good."""
    param = torch.nn.Parameter(torch.zeros(2))
    average = WeightAverage([param], epochs=2.0, steps=2)
    with torch.no_grad():
        param.fill_(11.0)
    average.update()
    assert torch.allclose(average.average[0], torch.full((2,), 9.0))
    with torch.no_grad():
        param.fill_(9.0)
    for _ in range(28):  # the average stays at 9; n reaches 29
        average.update()
    with torch.no_grad():
        param.fill_(13.0)
    average.update()
    assert torch.allclose(average.average[0], torch.full((2,), 10.0))
    with average.applied():
        assert torch.allclose(param, torch.full((2,), 10.0))
    assert param.tolist() == [13.0, 13.0]
    average.load()
    assert torch.allclose(param, torch.full((2,), 10.0))


def test_training_scores_keeps_and_refits_the_averaged_weights() -> None:
    """With ``average_epochs`` the epoch is scored and kept with the moving average, not the
    last step's weights, and a refit (empty validation) returns its last epoch's average;
    with 0, the last step's weights, as before."""
    features, sequences = cycle_data(n_users=200)
    settings = TrainSettings(dim=16, epochs=2, batch_size=64, negatives=16, max_len=10,
                             layers=1, lr=0.01, threads=1)
    tower = ItemTowerConfig(text_dim=FEATURE_DIM, image_dim=8, dim=16)
    empty = Validation([], np.zeros(0, np.int64))
    runs = {}
    for horizon in (0.0, 1.0):
        run = Training(features, sequences, settings.model_copy(
            update={"average_epochs": horizon}), tower, UserSettings(), valid=empty)
        run.epoch()
        run.epoch()
        live = run.items.all_vectors().clone()
        runs[horizon] = (run, live, run.result().item_vectors(features))
    plain, plain_live, plain_result = runs[0.0]
    averaged, averaged_live, averaged_result = runs[1.0]
    assert plain.average is None and np.allclose(plain_result, plain_live.numpy(), atol=1e-6)
    assert np.allclose(averaged_live.numpy(), plain_live.numpy(), atol=1e-6)  # same steps
    assert not np.allclose(averaged_result, averaged_live.numpy(), atol=1e-3)
    assert all(torch.equal(p, a) for p, a in zip(averaged.average.params,
                                                   averaged.average.average, strict=True))

    features, sequences = cycle_data(n_users=200)  # with validation: the kept state
    run = Training(features, sequences, settings.model_copy(update={"epochs": 1}), tower,
                   UserSettings())
    run.epoch()
    live = [p.detach().clone() for p in run.average.params]
    run.result()
    assert all(torch.equal(p, a) for p, a in zip(run.average.params, run.average.average,
                                                   strict=True))
    assert not all(torch.equal(p, a) for p, a in zip(live, run.average.average, strict=True))


def test_unseen_products_keep_their_content_vector() -> None:
    """ID embeddings start at zero and a product absent from training never moves: a cold
    product is exactly its content vector, so it is ranked at once."""
    features, sequences = cycle_data()
    cold = {0, 7, 13}
    sequences = [s[~np.isin(s, list(cold))] for s in sequences]
    settings = TrainSettings(dim=16, epochs=2, batch_size=64, negatives=16, max_len=10,
                             layers=1, id_embeddings=True, threads=1)
    result = fit(features, sequences, settings,
                 ItemTowerConfig(text_dim=FEATURE_DIM, image_dim=8, dim=16), UserSettings())
    assert result.id_embeddings is not None
    assert not result.id_embeddings[sorted(cold)].any()
    assert result.id_embeddings[[1, 2]].any()
    content = result.item_tower.embed(features.text)
    assert np.allclose(result.item_vectors(features)[sorted(cold)], content[sorted(cold)])


def test_learnt_words_reach_products_the_model_never_saw() -> None:
    """Every product has the same features (they say nothing) and one word, its category's:
    products held out of training are then told apart by their word alone. The next
    purchase is always of the next category, so the held-out product of that category is
    the right one: with word vectors it is found, without them it ties with every other
    held-out product (the same content vector, no ID)."""
    features, sequences = cycle_data()
    category = np.arange(len(features)) // PER_CATEGORY
    cold = np.arange(N_CATEGORIES) * PER_CATEGORY + PER_CATEGORY - 1  # one per category
    features = ItemFeatures(features.product_ids, np.ones((len(features), 2), np.float32),
                            words=[[f"category {c}"] for c in category])
    train = [s[~np.isin(s, cold)] for s in sequences]
    histories = [s[:4] for s in train[:200] if len(s) >= 4]
    valid = Validation(histories, np.array([cold[(category[h[-1]] + 1) % N_CATEGORIES]
                                            for h in histories]))
    tower = ItemTowerConfig(text_dim=2, image_dim=8, dim=16)
    recall = {}
    for words in (True, False):
        settings = TrainSettings(dim=16, epochs=12, batch_size=64, negatives=16, lr=5e-3,
                                 temperature=0.1, max_len=10, layers=1, dropout=0.1,
                                 patience=12, word_embeddings=words, threads=1,
                                 lr_decay=1.0)  # 12 epochs from zero: the full rate
        result = fit(features, train, settings, tower, UserSettings(), valid=valid)
        recall[words] = result.metrics["valid_recall@10"]
        assert (result.words is not None) == words
        vectors = result.item_vectors(features)
        assert np.allclose(vectors[cold[0]], vectors[cold[1]]) != words
    assert recall[True] > 0.9 and recall[False] < 0.2, recall


def test_holdout_last_keeps_validation_out_of_training() -> None:
    sequences = [np.array([1, 2, 3, 4]), np.array([5, 6]), np.array([7, 8, 7])]
    weights = [np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.5, 0.6]), np.array([0.7, 0.8, 0.9])]
    train, kept, valid = holdout_last(sequences, weights=weights)
    assert [t.tolist() for t in train] == [[1, 2, 3], [5, 6], [7, 8]]
    assert kept is not None and [w.tolist() for w in kept] == [[0.1, 0.2, 0.3], [0.5, 0.6],
                                                               [0.7, 0.8]]
    assert valid.targets.tolist() == [4]  # 7 was already in its history: not a target
    assert valid.histories[0].tolist() == [1, 2, 3]
    assert valid.weights is not None and valid.weights[0].tolist() == [0.1, 0.2, 0.3]
    assert holdout_last(sequences)[1] is None and holdout_last(sequences)[2].weights is None
    sequences[2] = np.array([7, 3, 9])
    train, _, valid = holdout_last(sequences, back=2)  # the one before the last: a target
    assert [t.tolist() for t in train] == [[1, 2], [5, 6], [7]]
    assert valid.targets.tolist() == [3, 3]
    assert [h.tolist() for h in valid.histories] == [[1, 2], [7]]


def test_training_pools_a_mixed_history_exactly_as_serving_does() -> None:
    """Train/serve parity: a history of views, carts, purchases and an unknown type, pooled
    by training's tower at every position (and batched, as validation scores it), is the
    vector serving's ``PoolingUserTower`` makes of the same vectors and types, for both
    poolings; weighing every event alike gives another vector."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    kinds = np.array(["view", "purchase", "add_to_cart", "view", "wishlist", "view", "purchase"])
    for user in (UserSettings(half_life=2.0), UserSettings(pooling="mean")):
        [weights] = event_weights([kinds], user)
        assert weights.tolist() == [0.3, 1.0, 0.6, 0.3, 0.3, 0.3, 1.0]
        pooled = PoolingUsers(user, 10)(torch.from_numpy(vectors)[None],
                                        torch.from_numpy(weights).float()[None])[0]
        serving = PoolingUserTower(user)
        for t in range(len(kinds)):
            np.testing.assert_allclose(pooled[t].numpy(), serving.user_vector(
                vectors[:t + 1], list(kinds[:t + 1])), atol=1e-6)
        batched = user_vectors(PoolingUsers(user, 10), torch.from_numpy(vectors),
                               [np.arange(7), np.arange(3)], 10,
                               weights=[weights, weights[:3]])
        np.testing.assert_allclose(batched[1].numpy(),
                                   serving.user_vector(vectors[:3], list(kinds[:3])), atol=1e-6)
        alike = serving.user_vector(vectors, ["purchase"] * 7)
        assert not np.allclose(batched[0].numpy(), alike, atol=1e-3)
        np.testing.assert_allclose(batched[0].numpy(), pooled[-1].numpy(), atol=1e-6)



def test_pooling_training_validates_on_the_served_history_window() -> None:
    """A pooling tower trains on windows of ``max_len`` + 1 events, but validation pools the
    newest ``[user] max_history`` events of a history, as serving does (with the 4-event
    training window, a 30-event history's vector would be a different one)."""
    from semrec.training.trainer import Training, history_window

    rng = np.random.default_rng(0)
    features = ItemFeatures([f"p{i}" for i in range(40)],
                            rng.normal(size=(40, 16)).astype(np.float32))
    sequences = [rng.choice(40, 30) for _ in range(8)]
    user = UserSettings(half_life=10.0, max_history=100)
    settings = TrainSettings(dim=16, user_tower="pooling", max_len=4, id_embeddings=False,
                             threads=1)
    history = sequences[0]
    target = np.setdiff1d(np.arange(40), history)[:1]
    run = Training(features, sequences, settings,
                   ItemTowerConfig(text_dim=16, image_dim=8, dim=16),
                   user, Validation([history], target))
    assert history_window(run.users) == 100
    vectors = run.items.all_vectors().detach()
    [pooled] = user_vectors(run.users, vectors, [history], history_window(run.users))
    served = PoolingUserTower(user).user_vector(vectors[history].numpy(),
                                                ["purchase"] * len(history))
    np.testing.assert_allclose(pooled.numpy(), served, atol=1e-6)
    short = PoolingUserTower(user).user_vector(vectors[history[-4:]].numpy(), ["purchase"] * 4)
    assert not np.allclose(pooled.numpy(), short, atol=1e-3)

# --- ``semrec train`` on the fixture home ------------------------------------------------------


def semrec(home: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--home", str(home), *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


FAST = {"dim": 32, "epochs": 2, "batch_size": 64, "negatives": 64, "max_len": 20,
        "layers": 1, "threads": 1}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture catalog (text only) and events, ingested once."""
    home = tmp_path_factory.mktemp("indexed")
    write_config(home)
    for command, file in (("ingest", "catalog.csv"), ("events", "events.csv")):
        code, _, stderr = semrec(home, command, str(FIXTURES / file))
        assert code == 0, stderr
    return home


def train_copy(indexed: Path, to: Path, train: dict[str, object]) -> Path:
    """A copy of the ``indexed`` home at ``to`` whose config adds ``train`` under [train]."""
    copy = Path(shutil.copytree(indexed, to))
    config = copy / "semrec.toml"
    config.write_text(config.read_text() + "[train]\n"
                      + "".join(f"{k} = {v}\n" for k, v in train.items()))
    return copy


@pytest.fixture
def home(indexed: Path, tmp_path: Path) -> Path:
    return train_copy(indexed, tmp_path / "home", FAST)


def test_train_command_trains_reindexes_and_serves_without_encoding(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sentence_transformers

    def no_encoder(*args: object, **kwargs: object) -> None:
        raise AssertionError("training must not load an encoder")

    monkeypatch.setattr(sentence_transformers.SentenceTransformer, "__init__", no_encoder)
    settings = load_settings(home=home)
    with Workspace(settings, own_index=False) as ws:
        features_before, old = ws.features.count(), ws.models.current_version()
    code, stdout, stderr = semrec(home, "train", "--no-search", "--force", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["products_indexed"] == 300 and summary["user_tower"] == "sequential"
    with Workspace(settings) as ws:
        new = ws.models.current_version()
        assert new != old and new == summary["version"] and new.startswith("trained-")
        assert ws.features.count() == features_before
        assert ws.served_store().count() == 300
        assert {r.model_version for r in ws.products.all()} == {new}
        manifest = ws.models.manifest(new)
        assert manifest.user_tower["kind"] == "sequential"
        recommender = open_recommender(ws)
        assert recommender.user_tower.kind == "sequential"  # feed uses what was trained
        history = [pid for pid, _, _ in ws.events.history("U001")]
        vectors = np.stack([i.vector for i in ws.served_store().get(history)])
        expected = recommender.user_tower.user_vector(vectors, ["purchase"] * len(history))
        pooled = PoolingUserTower(settings.user).user_vector(vectors, ["purchase"] * len(history))
        served, _ = recommender.user_vector("U001")
        np.testing.assert_allclose(served, expected, atol=1e-5)
        assert not np.allclose(served, pooled, atol=1e-3)
        feed = recommender.feed("U001", 5)
    assert feed.personalised and len(feed.items) == 5
    assert all(i.payload["model_version"] == new for i in feed.items)


def test_products_new_to_the_model_are_marked_and_boosted_in_feeds(home: Path) -> None:
    """A trained version marks every product it had no training events for as ``new``; the
    feed adds the boost its training chose (nats) times its temperature to their cosine. A
    boost far above any cosine gap fills the feed with the user's best new products, in
    cosine order."""
    code, stdout, stderr = semrec(home, "train", "--no-search", "--force", "--json")
    assert code == 0, stderr
    settings = load_settings(home=home)
    with Workspace(settings) as ws:
        version = ws.models.current_version()
        trained = ws.items(version).trained
        assert trained is not None and 0 < len(trained) < 300
        items = ws.served_store().get(sorted(ws.served_store().product_ids()), with_vectors=False)
        assert {i.product_id for i in items if i.payload["new"]} == \
               {i.product_id for i in items} - trained
        metrics = ws.models.manifest(version).metrics
        chosen = metrics["tuning"]["new_product_boost"]  # chosen on validation, in nats
        assert metrics["new_product_boost"] == chosen
        assert open_recommender(ws).new_boost == pytest.approx(
            chosen * metrics["train"]["temperature"])
        tower = ws.user_tower(version)
        plain = Recommender(ws.served_store(), ws.events, ws.products, settings.user, tower)
        boosted = Recommender(ws.served_store(), ws.events, ws.products, settings.user, tower,
                              new_boost=100.0)
        vector, _ = plain.user_vector("U001")
        bought = ws.events.products_with_event("U001", settings.user.bought_events)
        unboosted = ws.served_store().search(vector, 5, Filters(exclude=frozenset(bought)))
        best_new = ws.served_store().search(vector, 5,
                                            Filters(exclude=frozenset(bought), only_new=True))
        assert [i.product_id for i in plain.feed("U001", 5).items] == \
               [h.product_id for h in unboosted]
        feed = boosted.feed("U001", 5).items
    assert [i.product_id for i in feed] == [h.product_id for h in best_new]
    assert [i.score for i in feed] == pytest.approx([h.score + 100.0 for h in best_new])
    assert "new" not in feed[0].to_dict()


def test_ingest_after_training_keeps_id_embeddings_and_marks_new_products(home: Path) -> None:
    """Under a version trained with ID and word embeddings, a changed product is re-embedded
    from its new content plus its own ID embedding and its words (what it learnt from
    interactions stays); a product the version never saw gets its content vector plus the
    learnt vectors of its words, no ID, and is marked new."""
    code, _, stderr = semrec(home, "train", "--no-search", "--force", "--json")
    assert code == 0, stderr
    catalog = {p.product_id: p for p in read_catalog(FIXTURES / "catalog.csv").items}
    settings = load_settings(home=home)
    with Workspace(settings) as ws:
        items = ws.items(ws.models.current_version())
        assert items.ids is not None and items.trained is not None
        known = sorted(items.ids)[0]
        changed = replace(catalog[known], title=catalog[known].title + " (2026 edition)")
        brand_new = replace(catalog[known], product_id="P9999")
        report = index_ingest(ws, [changed, brand_new], image_source())
        assert (report.added, report.updated) == (1, 1)
        rows = ws.products.get_many([known, "P9999"])
        stored = {i.product_id: i for i in ws.served_store().get([known, "P9999"])}
        order = [known, "P9999"]
        content = embed_cached(ws.features, items.tower, [rows[p].text_key for p in order],
                               [rows[p].image_key for p in order])
    assert items.words is not None
    words = items.words.vectors([product_words(changed), product_words(brand_new)])
    assert np.abs(words[1]).sum() > 0  # its title's words were learnt from other products
    np.testing.assert_allclose(stored[known].vector,
                               add_terms(content[:1], items.ids[known][None], words[:1])[0],
                               atol=1e-5)
    np.testing.assert_allclose(stored["P9999"].vector,
                               add_terms(content[1:], words[1:])[0], atol=1e-5)
    assert stored[known].payload["new"] is False and stored["P9999"].payload["new"] is True


def test_train_command_takes_the_loss_and_names_a_wrong_one(home: Path) -> None:
    code, stdout, stderr = semrec(home, "train", "--loss", "sampled", "--no-id-embeddings",
                                  "--no-search", "--force", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["loss"], summary["id_embeddings"]) == ("sampled", False)
    code, _, stderr = semrec(home, "train", "--loss", "exact")
    assert code == 1 and "loss" in stderr and "'auto', 'full' or 'sampled'" in stderr, stderr


def test_load_home_reads_each_users_events_and_types_in_serving_order(indexed: Path) -> None:
    """``load_home``'s sequences and event types are each user's history as serving reads
    it (``EventLog.history``: oldest first), views and carts included."""
    settings = load_settings(home=indexed)
    with Workspace(settings, own_index=False) as ws:
        features, sequences, kinds = load_home(ws.conn, 512)
        histories = {}
        for user_id in sorted({u for (u,) in ws.conn.execute("SELECT user_id FROM events")}):
            histories[user_id] = ws.events.history(user_id)
    read = {(tuple(features.product_ids[i] for i in s), tuple(k))
            for s, k in zip(sequences, kinds, strict=True)}
    assert read == {(tuple(p for p, _, _ in h), tuple(e for _, _, e in h))
                    for h in histories.values()}
    assert len(sequences) == len(histories) == 100
    assert {"view", "add_to_cart", "purchase"} == set(np.concatenate(kinds))


def test_saved_version_reloads_to_the_same_user_vector(home: Path) -> None:
    settings = load_settings(home=home)
    with Workspace(settings, own_index=False) as ws:
        image_dim = ws.items(ws.served_version()).tower.config.image_dim
        features, sequences, _ = load_home(ws.conn, image_dim)
        tower = ItemTowerConfig(text_dim=features.text.shape[1], image_dim=image_dim, dim=32)
        train = settings.train.model_copy(update={"id_embeddings": True})
        result = fit(features, sequences, train, tower, settings.user)
        manifest = save_version(ws, result, features.product_ids, train.model_dump())
        assert build_version(ws, manifest.version) == 300
    assert serve_version(settings, manifest.version) == "served"
    with Workspace(settings) as ws:
        user = ws.user_tower(manifest.version)
        assert isinstance(user, SequentialTower)
        history = sequences[0]
        stored = {s.product_id: s.vector for s in
                  ws.served_store().get([features.product_ids[i] for i in history])}
        served = user.user_vector(np.stack([stored[features.product_ids[i]] for i in history]),
                                  ["purchase"] * len(history))
    trained = result.user_tower.user_vector(result.item_vectors(features)[history])
    assert np.allclose(served, trained, atol=1e-5)
    assert abs(np.linalg.norm(served) - 1) < 1e-5


def test_a_new_version_is_served_only_when_complete(home: Path) -> None:
    settings = load_settings(home=home)
    with Workspace(settings, own_index=False) as ws:
        old = ws.served_version()
        image_dim = ws.items(old).tower.config.image_dim
        features, sequences, _ = load_home(ws.conn, image_dim)
        query = ws.served_store().get(["P0001"])[0].vector
        train = settings.train.model_copy(update={"user_tower": "pooling"})
        tower = ItemTowerConfig(text_dim=features.text.shape[1], image_dim=image_dim, dim=32)
        result = fit(features, sequences, train, tower, settings.user)
        manifest = save_version(ws, result, features.product_ids, train.model_dump())
        seen: list[str] = []

        def during(n: int) -> None:  # the old version serves until the new index is complete
            assert ws.models.current_version() == old
            hits = ws.served_store().search(query, 3)
            seen.extend(h.payload["model_version"] for h in hits)

        build_version(ws, manifest.version, during)
        assert seen and set(seen) == {old}
        assert ws.models.current_version() == old
        ws.close_store(old)
    assert serve_version(settings, manifest.version) == "served"
    with Workspace(settings) as ws:
        assert ws.models.current_version() == manifest.version
        hits = ws.served_store().search(ws.served_store().get(["P0001"])[0].vector, 3)
        assert {h.payload["model_version"] for h in hits} == {manifest.version}
        user, dim = ws.user_tower(manifest.version), ws.items(manifest.version).tower.config.dim
    assert isinstance(user, PoolingUserTower)
    assert dim == 32


def test_evaluation_runner_trains_on_the_split_and_leaves_the_served_model(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from semrec.evaluation import EvalContext, load_dataset, make_split, rank_users, summarise
    from semrec.evaluation.models import get_runner
    from semrec.towers import ModelRegistry

    # the trained path: on the fixtures' 88 validation users a clear win is a coin toss
    monkeypatch.setenv("SEMREC_TRAIN__WIN_Z", "0")
    dataset = load_dataset(FIXTURES / "catalog.csv", FIXTURES / "events.csv")
    split = make_split(dataset, "last", cold_fraction=0.1)
    settings = load_settings(home=home)
    served = ModelRegistry(home / "models").current_version()
    ctx = EvalContext(dataset, split, (10,), settings, home)
    [fitted] = get_runner("semrec-trained")(ctx)
    assert fitted.name == "semrec-trained-sequential-id" and fitted.family == "semrec"
    assert fitted.valid is not None and "recall@10" in fitted.valid
    scores = fitted.scorer(split.test.users)
    assert len(split.cold_items) and np.isfinite(scores[:, split.cold_items]).all()  # content
    assert fitted.info["new_products"] >= len(split.cold_items)  # boosted as serving does
    history = split.test.train.matrix(split.n_users, split.n_items)
    ranked = rank_users(fitted.scorer, split.test.users, split.test.targets, history, 10)
    assert summarise(ranked, (10,), split.n_items)["recall@10"] > 0
    assert ModelRegistry(home / "models").current_version() == served  # never promoted


def test_served_score_pools_with_the_pooling_the_version_was_saved_with(home: Path) -> None:
    """Safe promotion scores the served version as it serves: a pooling-trained version
    pools with the pooling it was trained and saved with, whatever ``[user]`` says now."""
    base = load_settings(home=home)

    def pooled(pooling: str):
        return base.model_copy(update={
            "user": base.user.model_copy(update={"pooling": pooling, "half_life": 1.0}),
            "feed": base.feed.model_copy(update={"new_product_boost": 0.0})})

    train = base.train.model_copy(update={"user_tower": "pooling", "id_embeddings": False})
    versions, scores = {}, {}
    for pooling in ("recency", "mean"):
        with Workspace(pooled(pooling), own_index=False) as ws:
            image_dim = ws.items(ws.served_version()).tower.config.image_dim
            features, sequences, _ = load_home(ws.conn, image_dim)
            _, _, valid = holdout_last(sequences)
            tower = ItemTowerConfig(text_dim=features.text.shape[1], image_dim=image_dim,
                                    dim=32)
            result = fit(features, sequences, train, tower, ws.settings.user)
            versions[pooling] = save_version(ws, result, features.product_ids,
                                             train.model_dump()).version
    for now in ("recency", "mean"):
        with Workspace(pooled(now), own_index=False) as ws:
            for saved, version in versions.items():
                scores[now, saved] = served_score(ws, version, features, valid)
    assert scores["recency", "recency"] == scores["mean", "recency"]
    assert scores["recency", "mean"] == scores["mean", "mean"]
    assert scores["mean", "recency"] != scores["mean", "mean"]  # the pooling matters here
