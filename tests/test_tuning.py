"""Tests for ``semrec.training.tuning`` and the promotion rule of ``semrec train``, on data
with known answers: synthetic catalogs where training must help or must hurt, the fixture
home (bundled MiniLM features, SQLite, Qdrant Edge) end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from semrec.cli import app
from semrec.config import TrainSettings, UserSettings, load_settings
from semrec.towers import ItemTowerConfig
from semrec.towers.user import PoolingUserTower
from semrec.training import ItemFeatures, Validation, fit, holdout_last, load_home
from semrec.training.data import event_weights
from semrec.training.reindex import build_version, save_version, serve_version
from semrec.training.trainer import Training, new_targets, resolve_loss
from semrec.training.tuning import (
    UNTRAINED,
    Candidate,
    candidates,
    cold_products,
    paired_z,
    refit,
    score_untrained,
    tune,
)
from semrec.workspace import Workspace
from tests.test_training import FEATURE_DIM, cycle_data, indexed, train_copy  # noqa: F401

runner = CliRunner()
SMALL = {"dim": 16, "epochs": 6, "batch_size": 64, "lr": 5e-3, "temperature": 0.1,
         "max_len": 10, "layers": 1, "heads": 2, "dropout": 0.1, "patience": 2, "threads": 1}
TOWER = ItemTowerConfig(text_dim=FEATURE_DIM, image_dim=8, dim=16)
UNTRAINED_TOWER = ItemTowerConfig(text_dim=FEATURE_DIM, image_dim=8, dim=FEATURE_DIM)


def misleading_data(seed: int = 0) -> tuple[ItemFeatures, list[np.ndarray], Validation]:
    """Training can only hurt: every training sequence jumps to the *next* category (c, c+1,
    ...), while each validation user's target is another product of the category they
    bought in, which content similarity alone finds (recall@10 1.0 untrained: a category
    holds 6 products, the history 2 of them)."""
    rng = np.random.default_rng(seed)
    features, train = cycle_data(n_users=400, seed=seed)
    histories, targets = [], []
    for _ in range(200):
        c = int(rng.integers(8))
        picks = c * 6 + rng.permutation(6)[:3]
        histories.append(picks[:2])
        targets.append(picks[2])
    return features, train, Validation(histories, np.array(targets))


def test_search_returns_the_untrained_model_when_training_only_hurts() -> None:
    features, train, valid = misleading_data()
    tuned = tune(features, train, valid, TrainSettings(**SMALL), TOWER, UNTRAINED_TOWER,
                 UserSettings(), budget_minutes=5)
    zero = tuned.candidates[0]
    assert zero.name == UNTRAINED and zero.recall == 1.0 and zero.epochs == 0
    assert tuned.untrained_won and tuned.settings is None and tuned.model is None
    trained = tuned.candidates[1:]
    assert len(trained) >= 5 and all(c.epochs_run >= 1 for c in trained)
    assert all(c.recall <= zero.recall for c in trained)
    assert refit(features, train, tuned, TOWER, UserSettings()) is None


def test_untrained_candidate_is_the_frozen_space_pooled() -> None:
    """Candidate 0 is scored as the served untrained model ranks: recency-pooled unit
    feature vectors (the initial heads are an isometry), history excluded."""
    features, sequences = cycle_data()
    train, _, valid = holdout_last(sequences)
    tuned = tune(features, train, valid, TrainSettings(**SMALL), TOWER, UNTRAINED_TOWER,
                 UserSettings(), space=[])
    unit = features.text / np.linalg.norm(features.text, axis=1, keepdims=True)
    hits = 0
    for history, target in zip(valid.histories, valid.targets, strict=True):
        weights = 0.5 ** (np.arange(len(history))[::-1] / UserSettings().half_life)
        scores = unit @ (weights @ unit[history])
        scores[history] = -np.inf
        hits += int((scores >= scores[target]).sum() - 1 < 10)
    assert 0 < hits < len(valid)
    assert tuned.candidates[0].recall == pytest.approx(hits / len(valid))
    assert [c.name for c in tuned.candidates] == [UNTRAINED]


def test_untrained_candidate_weighs_history_events_by_type_as_served() -> None:
    """Each validation user bought ``a``, then viewed two products of another category;
    their target is ``a``'s near twin. Weighed as served (purchase 1, view 0.3, recency)
    the user is nearest ``a``'s category and finds the twin: recall 1, and each user's vector is
    ``PoolingUserTower``'s. Every event alike, the two views win and the target ranks
    behind the ten other products of their category: recall 0."""
    rng = np.random.default_rng(0)
    n_cat, per = 4, 12
    centroids = np.linalg.qr(rng.normal(size=(FEATURE_DIM, n_cat)))[0].T
    text = np.repeat(centroids, per, axis=0) + 0.05 * rng.normal(size=(n_cat * per, FEATURE_DIM))
    text[1::per] = text[0::per] + 0.001 * rng.normal(size=(n_cat, FEATURE_DIM))  # twins
    features = ItemFeatures([f"P{i}" for i in range(len(text))], text.astype(np.float32))
    pairs = [(a, b) for a in range(n_cat) for b in range(n_cat) if a != b]
    histories = [np.array([a * per, b * per + 5, b * per + 6]) for a, b in pairs]
    targets = np.array([a * per + 1 for a, _ in pairs])
    kinds = [np.array(["purchase", "view", "view"])] * len(pairs)
    user = UserSettings()
    weighted = Validation(histories, targets, event_weights(kinds, user))
    zero = score_untrained(features, UNTRAINED_TOWER, user, weighted)
    alike = score_untrained(features, UNTRAINED_TOWER, user, Validation(histories, targets))
    assert (zero.recall, alike.recall) == (1.0, 0.0)
    unit = features.text / np.linalg.norm(features.text, axis=1, keepdims=True)
    served = PoolingUserTower(user)
    for history, kind, target in zip(histories, kinds, targets, strict=True):
        scores = unit @ served.user_vector(unit[history], list(kind))
        scores[history] = -np.inf
        assert (scores > scores[target]).sum() < 10  # a hit, ranked as served
    assert zero.hits is not None and zero.hits.all()


def test_search_chooses_training_where_it_helps_and_refits_for_its_epochs() -> None:
    features, sequences = cycle_data()
    train, _, valid = holdout_last(sequences)
    tuned = tune(features, train, valid, TrainSettings(**SMALL), TOWER, UNTRAINED_TOWER,
                 UserSettings(), budget_minutes=5)
    assert not tuned.untrained_won and tuned.chosen.recall > 0.9
    assert tuned.chosen.recall > tuned.candidates[0].recall + 0.5
    assert tuned.settings is not None and tuned.settings.epochs == tuned.chosen.epochs
    listed = tuned.to_dict()
    assert listed["chosen"] == tuned.chosen.name
    assert [c["name"] for c in listed["candidates"]][:3] == [UNTRAINED, "configured", "warm"]
    result = refit(features, sequences, tuned, TOWER, UserSettings())
    assert result is not None and result.metrics["epochs_run"] == tuned.chosen.epochs


def test_a_trained_candidate_needs_a_clear_win_over_untrained() -> None:
    """McNemar's z of the paired hits: 5 users found only by the candidate, none only by the
    untrained model, is z = sqrt(5); a bar above the cycle data's huge win keeps untrained."""
    hits = np.array([True] * 5 + [False] * 5 + [True] * 3)
    base = np.array([False] * 5 + [False] * 5 + [True] * 3)
    assert paired_z(hits, base) == pytest.approx(np.sqrt(5))
    assert paired_z(base, base) == 0.0
    features, sequences = cycle_data()
    train, _, valid = holdout_last(sequences)
    strict = TrainSettings(**{**SMALL, "win_z": 1e6})
    tuned = tune(features, train, valid, strict, TOWER, UNTRAINED_TOWER, UserSettings(),
                 space=[Candidate("configured", {})])
    assert tuned.candidates[1].recall > tuned.candidates[0].recall + 0.5
    assert tuned.untrained_won and tuned.z > 10


def test_budget_stops_the_search() -> None:
    """No time: every trained candidate is listed as skipped and the untrained model is
    chosen; a budget for about one candidate stops the search before the last one."""
    features, sequences = cycle_data()
    train, _, valid = holdout_last(sequences)
    settings = TrainSettings(**SMALL)
    none = tune(features, train, valid, settings, TOWER, UNTRAINED_TOWER, UserSettings(),
                budget_minutes=1e-9)
    assert none.untrained_won
    assert [c.status for c in none.candidates[1:]] == ["skipped"] * (len(none.candidates) - 1)
    assert all(c.epochs_run == 0 for c in none.candidates[1:])
    full = tune(features, train, valid, settings, TOWER, UNTRAINED_TOWER, UserSettings(),
                budget_minutes=5)
    first = full.candidates[1]
    some = tune(features, train, valid, settings, TOWER, UNTRAINED_TOWER, UserSettings(),
                budget_minutes=first.seconds * 1.5 / 60)
    assert some.candidates[1].epochs_run >= 1
    assert some.candidates[-1].status == "skipped"
    assert some.seconds < full.seconds


def test_auto_loss_is_sampled_only_where_the_catalogue_dwarfs_the_negatives() -> None:
    """``loss = "auto"``: full up to four times ``negatives`` products with training events,
    sampled beyond; the search starts from the resolved loss, offers the other one (the exact
    loss right after ``configured``, the sampled one last), and the chosen settings name the
    loss the model was trained with."""
    auto = TrainSettings(negatives=10)
    assert auto.loss == "auto"
    assert resolve_loss(auto, 40).loss == "full" and resolve_loss(auto, 41).loss == "sampled"
    assert resolve_loss(TrainSettings(loss="full", negatives=10), 10**6).loss == "full"
    for loss, other, at in (("full", "sampled", -1), ("sampled", "full", 1)):
        names = [c.name for c in candidates(TrainSettings(loss=loss), FEATURE_DIM)]
        assert names[at] == other and loss not in names
    features, sequences = cycle_data()  # 48 products
    train, _, valid = holdout_last(sequences)
    assert Training(features, train, TrainSettings(**SMALL, negatives=11), TOWER,
                    UserSettings(), valid).settings.loss == "sampled"
    for negatives, loss in ((12, "full"), (11, "sampled")):
        settings = TrainSettings(**{**SMALL, "negatives": negatives, "win_z": 0.0})
        tuned = tune(features, train, valid, settings, TOWER, UNTRAINED_TOWER, UserSettings(),
                     space=[Candidate("configured", {})])
        assert tuned.settings is not None and tuned.settings.loss == loss


def test_the_full_softmax_goes_first_where_the_budget_affords_it() -> None:
    """Where ``auto`` took the sampled loss, a few timed steps of the full softmax decide the
    order: with time for ``FULL_FIRST_EPOCHS`` epochs of it (search and refit), ``full`` is
    tried first and the chosen settings name it; without, it stays after ``configured``; a
    configured ``sampled`` keeps ``configured`` first whatever the budget."""
    features, sequences = cycle_data()  # 48 products: sampled with 11 negatives
    train, _, valid = holdout_last(sequences)
    space = [Candidate("configured", {}), Candidate("full", {"loss": "full"})]

    def order(budget: float, **overrides: object) -> list[str]:
        settings = TrainSettings(**{**SMALL, "negatives": 11, "win_z": 0.0, **overrides})
        tuned = tune(features, train, valid, settings, TOWER, UNTRAINED_TOWER,
                     UserSettings(), budget_minutes=budget, space=space)
        if tuned.candidates[1].epochs_run:
            assert tuned.settings is not None
            assert tuned.settings.loss == tuned.chosen.overrides.get("loss", "sampled")
        return [c.name for c in tuned.candidates]

    assert order(5) == [UNTRAINED, "full", "configured"]
    assert order(1e-9) == [UNTRAINED, "configured", "full"]
    assert order(5, loss="sampled") == [UNTRAINED, "configured", "full"]


def test_refit_trains_products_seen_only_as_validation_targets() -> None:
    """Product 5 is only ever some users' last event (a validation target): the search's
    model never trained it (no ID embedding), the refit on every event did."""
    features, sequences = cycle_data()
    only_target = 5
    sequences = [s[s != only_target] for s in sequences]
    for s in sequences[:30]:
        s[-1] = only_target  # the category before 5's is 0 in the cycle: keep it simple
    train, _, valid = holdout_last(sequences)
    assert only_target in valid.targets and not any(only_target in s for s in train)
    settings = TrainSettings(**{**SMALL, "id_embeddings": True})
    tuned = tune(features, train, valid, settings, TOWER, UNTRAINED_TOWER, UserSettings(),
                 space=[Candidate("configured", {})])
    assert tuned.model is not None and not tuned.model.trained[only_target]
    result = refit(features, sequences, tuned, TOWER, UserSettings())
    assert result is not None and result.trained[only_target]
    assert result.id_embeddings is not None and result.id_embeddings[only_target].any()


def test_repeat_targets_are_left_out_only_when_asked() -> None:
    """``repeats = false``: a target already in the sequence before it is not trained on."""
    assert new_targets(np.array([1, 2, 1, 3, 2])).tolist() == [True, False, True, False]
    features, sequences = cycle_data()
    again = [np.concatenate([s, s[:2]]) for s in sequences]  # the first two bought again
    settings = TrainSettings(**{**SMALL, "epochs": 1})
    with_repeats = fit(features, again, settings, TOWER, UserSettings())
    without = fit(features, again, settings.model_copy(update={"repeats": False}), TOWER,
                  UserSettings())
    assert with_repeats.epochs[0]["loss"] != without.epochs[0]["loss"]
    same = fit(features, sequences, settings.model_copy(update={"repeats": False}), TOWER,
               UserSettings())
    plain = fit(features, sequences, settings, TOWER, UserSettings())
    assert same.epochs[0]["loss"] == plain.epochs[0]["loss"]  # no repeats: nothing changes


def test_cold_products_follow_the_share_of_products_without_events() -> None:
    """Half the catalog has no events: 10 % (the cap) of those with events are held out;
    where every product has events, 2 % (the floor)."""
    half = [np.arange(0, 500)]
    held = cold_products(half, 1000, seed=0)
    assert len(held) == 50 and np.isin(held, np.arange(500)).all()
    every = cold_products([np.arange(1000)], 1000, seed=0)
    assert len(every) == 20
    assert len(cold_products([np.arange(10)], 1000, seed=0)) == 0  # too few to spare


def test_held_out_products_are_untrained_in_the_search_and_boost_is_listed() -> None:
    rng = np.random.default_rng(1)
    n = 400
    features = ItemFeatures([f"P{i}" for i in range(n)],
                            rng.normal(size=(n, FEATURE_DIM)).astype(np.float32))
    sequences = [rng.integers(0, 200, size=8) for _ in range(300)]  # half the catalog unsold
    train, _, valid = holdout_last(sequences)
    tuned = tune(features, train, valid, TrainSettings(**SMALL), TOWER, UNTRAINED_TOWER,
                 UserSettings(), space=[Candidate("configured", {})])
    assert tuned.cold_products == round(0.1 * len(np.unique(np.concatenate(train))))
    run = tuned.candidates[1]
    assert run.boost in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
    assert "boost" in json.dumps(tuned.to_dict())


# --- ``semrec train``: promotion only on a validation win --------------------------------------


def semrec(home: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--home", str(home), *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


FAST = {"dim": 32, "epochs": 3, "batch_size": 64, "max_len": 20, "layers": 1, "threads": 1,
        "patience": 2}


@pytest.fixture
def home(indexed: Path, tmp_path: Path) -> Path:  # noqa: F811 - the imported fixture
    return train_copy(indexed, tmp_path / "home", FAST)


def serve_memorised(home: Path) -> str:
    """Serve a version trained 40 epochs on every event, validation targets included (it
    has them by heart): no fresh training can beat it on those targets."""
    settings = load_settings(home=home)
    with Workspace(settings, own_index=False) as ws:
        image_dim = ws.items(ws.served_version()).tower.config.image_dim
        features, sequences, _ = load_home(ws.conn, image_dim)
        train = settings.train.model_copy(update={"epochs": 40, "id_embeddings": True,
                                                  "id_dropout": 0.0})
        tower = ItemTowerConfig(text_dim=features.text.shape[1], image_dim=image_dim, dim=32)
        result = fit(features, sequences, train, tower, settings.user,
                     valid=Validation([], np.zeros(0, np.int64)))
        manifest = save_version(ws, result, features.product_ids, train.model_dump())
        build_version(ws, manifest.version)
    serve_version(settings, manifest.version)
    return manifest.version


def test_train_keeps_the_served_version_when_it_wins_on_validation(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMREC_TRAIN__WIN_Z", "0")  # any win over untrained: compare served
    # every event type alike: two epochs then beat the untrained model on the fixtures
    monkeypatch.setenv("SEMREC_USER__EVENT_WEIGHTS", '{"purchase": 1, "add_to_cart": 1, "view": 1}')
    served = serve_memorised(home)
    plain = ("--no-word-embeddings",)  # one averaged epoch stays near the untrained model
    code, stdout, stderr = semrec(home, "train", "--no-search", "--epochs", "2", *plain, "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["promoted"] is False and summary["version"] == served
    assert summary["served_valid_recall@10"] > summary["valid_recall@10"]
    assert load_settings(home=home) and (home / "models" / "CURRENT").read_text().strip() == served
    code, stdout, _ = semrec(home, "train", "--no-search", "--epochs", "2", *plain)
    assert code == 0 and f"kept {served}" in " ".join(stdout.split())
    code, stdout, stderr = semrec(home, "train", "--no-search", "--epochs", "1", *plain, "--force",
                                  "--json")
    assert code == 0, stderr
    forced = json.loads(stdout)
    assert forced["promoted"] is True and forced["forced"] is True
    assert (home / "models" / "CURRENT").read_text().strip() == forced["version"] != served


def test_train_lists_every_candidate_in_output_and_manifest(home: Path) -> None:
    code, stdout, stderr = semrec(home, "train", "--force", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    names = [c["name"] for c in summary["tuning"]["candidates"]]
    assert names[0] == UNTRAINED and len(names) >= 6
    assert all(f"candidate {name}: valid recall@10" in stderr for name in names
               if summary["tuning"]["candidates"][names.index(name)]["status"] != "skipped")
    with Workspace(load_settings(home=home), own_index=False) as ws:
        manifest = ws.models.manifest(ws.models.current_version())
    assert manifest.metrics["tuning"]["candidates"] == summary["tuning"]["candidates"]
    assert manifest.metrics["tuning"]["chosen"] == summary["chosen"] != UNTRAINED
    assert manifest.metrics["refit"] is True


def test_train_says_so_when_the_untrained_model_wins(home: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A learning rate far too large (training diverges) into 8-wide heads: the trained
    candidate loses to the untrained model on validation, so nothing new is served."""
    monkeypatch.setenv("SEMREC_TRAIN__LR", "1.0")
    monkeypatch.setenv("SEMREC_TRAIN__DIM", "8")
    before = (home / "models" / "CURRENT").read_text()
    code, stdout, stderr = semrec(home, "train", "--no-search", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["chosen"] == UNTRAINED and summary["promoted"] is False
    assert summary["tuning"]["candidates"][1]["recall"] < summary["valid_recall@10_untrained"]
    code, stdout, stderr = semrec(home, "train", "--no-search")
    assert "the untrained model wins on validation" in " ".join(stdout.split())
    assert (home / "models" / "CURRENT").read_text() == before
