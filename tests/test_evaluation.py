"""Tests for ``semrec.evaluation``: splits, metrics, baselines and the ``evaluate`` command,
on tiny synthetic data with known answers and real components (implicit ALS, the MiniLM
encoder, the Qdrant Edge store)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from semrec.catalog import Event, Product
from semrec.cli import app
from semrec.config import load_settings
from semrec.evaluation import EvalContext, make_dataset, make_split, rank_users, summarise
from semrec.evaluation.baselines import (
    AlsGrid,
    EaseSearch,
    ease_weights,
    fit_ease,
    popularity_scorer,
    tune_als,
    tune_ease,
)
from semrec.evaluation.metrics import Ranked, bootstrap_means, interval
from semrec.evaluation.runner import compare
from semrec.evaluation.splits import Dataset, Phase, Split
from tests.conftest import FIXTURES

# --- synthetic data ---------------------------------------------------------------------------


def products(n: int) -> list[Product]:
    return [Product(f"P{i:04d}", f"product {i}") for i in range(n)]


def random_dataset(n_items: int = 300, n_users: int = 400, seed: int = 1,
                   lengths: tuple[int, int] = (3, 8)) -> Dataset:
    """Users buy distinct random products, one per time step."""
    rng = np.random.default_rng(seed)
    events = []
    for u in range(n_users):
        n = int(rng.integers(lengths[0], lengths[1] + 1))
        for t, item in enumerate(rng.choice(n_items, n, replace=False)):
            events.append(Event(f"U{u}", f"P{item:04d}", float(t)))
    return make_dataset(products(n_items), events, name="random")


def clustered_dataset(n_users: int = 300, seed: int = 2) -> Dataset:
    """4 clusters of 25 products; each user buys only inside their cluster."""
    rng = np.random.default_rng(seed)
    events = []
    for u in range(n_users):
        cluster = u % 4
        picks = rng.choice(25, int(rng.integers(4, 9)), replace=False) + 25 * cluster
        events += [Event(f"U{u}", f"P{i:04d}", float(t)) for t, i in enumerate(picks)]
    return make_dataset(products(100), events, name="clustered")


def ids(dataset: Dataset, users: np.ndarray) -> list[str]:
    return [dataset.user_ids[u] for u in users]


def context(dataset: Dataset, split: Split, tmp_path: Path,
            ks: tuple[int, ...] = (10, 20)) -> EvalContext:
    settings = load_settings(home=tmp_path / "eval").model_copy(update={"store": ""})
    return EvalContext(dataset, split, ks, settings, tmp_path / "eval")


def rank_test(split: Split, scorer, kmax: int = 20):
    phase = split.test
    history = phase.train.matrix(split.n_users, split.n_items)
    return rank_users(scorer, phase.users, phase.targets, history, kmax, batch=64)


# --- splits -----------------------------------------------------------------------------------


def test_last_split_targets_and_training() -> None:
    events = [Event("a", "P0000", 0), Event("a", "P0001", 1), Event("a", "P0002", 2),
              Event("a", "P0003", 3),
              Event("b", "P0004", 5), Event("b", "P0000", 1), Event("b", "P0002", 9),  # unsorted
              Event("c", "P0001", 0), Event("c", "P0002", 1)]  # too short: training only
    d = make_dataset(products(5), events)
    s = make_split(d, "last")
    assert ids(d, s.test.users) == ["a", "b"]
    assert s.test.targets.tolist() == [3, 2]
    assert ids(d, s.valid.users) == ["a", "b"]
    assert s.valid.targets.tolist() == [2, 4]
    valid_train = {(d.user_ids[u], i) for u, i in zip(s.valid.train.users, s.valid.train.items,
                                                      strict=True)}
    assert valid_train == {("a", 0), ("a", 1), ("b", 0), ("c", 1), ("c", 2)}
    test_train = {(d.user_ids[u], i) for u, i in zip(s.test.train.users, s.test.train.items,
                                                     strict=True)}
    assert test_train == valid_train | {("a", 2), ("b", 4)}
    assert s.info["users_too_short"] == 1


def test_last_split_skips_a_target_already_in_the_history() -> None:
    events = [Event("a", f"P000{i}", t) for t, i in enumerate([0, 1, 2, 0])]
    events += [Event("b", f"P000{i}", t) for t, i in enumerate([0, 1, 2, 3])]
    d = make_dataset(products(4), events)
    s = make_split(d, "last")
    assert ids(d, s.test.users) == ["b"]
    assert s.info["test_repeat_targets_skipped"] == 1


def test_last_split_is_the_training_holdout() -> None:
    """One leave-last-out: on the fixture events, the ``last`` split's validation and test
    phases are ``holdout_last`` of every user's sequence, one and two events back."""
    from ingest import read_catalog, read_events
    from semrec.training import holdout_last
    from semrec.training.data import sequences_from_arrays

    events = read_events(FIXTURES / "events.csv").items
    repeats = [Event(e.user_id, e.product_id, e.timestamp + 1e9, e.event) for e in events[:20]]
    d = make_dataset(read_catalog(FIXTURES / "catalog.csv").items, events + repeats)
    s = make_split(d, "last")
    sequences = sequences_from_arrays(d.events.users, d.events.items)
    for phase, back in ((s.valid, 2), (s.test, 1)):
        train, _, valid = holdout_last(sequences, back=back)
        assert valid.targets.tolist() == phase.targets.tolist()
        offsets = phase.train.offsets(s.n_users)
        assert [phase.train.items[offsets[u]:offsets[u + 1]].tolist()
                for u in range(s.n_users)] == [t.tolist() for t in train]
        assert [h.tolist() for h in valid.histories] == [train[u].tolist() for u in phase.users]
    assert s.info["test_repeat_targets_skipped"] > 0  # users who bought again: skipped


def test_temporal_split_cuts_at_a_quantile_and_takes_the_first_new_product() -> None:
    events = [Event("a", "P0000", 1), Event("a", "P0001", 2), Event("a", "P0002", 5),
              Event("a", "P0000", 8), Event("a", "P0003", 9), Event("a", "P0004", 10),
              Event("b", "P0001", 3), Event("b", "P0002", 7),
              Event("c", "P0004", 9)]  # no history before the cut: not evaluated
    d = make_dataset(products(5), events)
    s = make_split(d, "temporal", quantile=0.6)
    cut = float(np.quantile([1, 2, 5, 8, 9, 10, 3, 7, 9], 0.6))
    assert s.info["cut"] == cut == pytest.approx(7.8)
    assert set(s.test.train.times) == {1, 2, 5, 3, 7}
    # a: P0000 after the cut is a repeat, P0003 is the first new one; b has nothing after.
    assert ids(d, s.test.users) == ["a"] and s.test.targets.tolist() == [3]
    assert s.info["test_users_without_history"] == 1
    vcut = float(np.quantile([1, 2, 5, 3, 7], 0.6))
    assert s.info["valid_cut"] == vcut == 3.8
    assert (s.valid.train.times < vcut).all()
    assert sorted(ids(d, s.valid.users)) == ["a", "b"]
    assert s.valid.targets[s.valid.users == d.user_ids.index("b")].tolist() == [2]


def test_cold_group_only_holds_users_whose_target_was_removed_from_training() -> None:
    d = random_dataset()
    s = make_split(d, "last", cold_fraction=0.2, seed=3)
    cold = set(s.cold_items.tolist())
    assert len(cold) == round(0.2 * len(np.unique(d.events.items)))
    for phase in (s.valid, s.test):
        assert not cold & set(phase.train.items.tolist())
    assert not cold & set(s.valid.targets.tolist())
    in_cold = np.isin(s.test.targets, s.cold_items)
    assert (s.test_cold == in_cold).all() and in_cold.any() and (~in_cold).any()
    assert set(s.groups()) == {"warm", "cold"}
    # The cold items are seeded: the same seed gives the same ones, another seed others.
    assert make_split(d, "last", 0.2, seed=3).cold_items.tolist() == sorted(cold)
    assert make_split(d, "last", 0.2, seed=4).cold_items.tolist() != sorted(cold)


def test_test_targets_never_reach_the_validation_phase() -> None:
    d = random_dataset()
    for kind in ("last", "temporal"):
        s = make_split(d, kind)
        valid_keys = set((s.valid.train.users * d.n_items + s.valid.train.items).tolist())
        test_keys = (s.test.users * d.n_items + s.test.targets).tolist()
        assert not valid_keys & set(test_keys)


# --- metrics ----------------------------------------------------------------------------------


def test_an_oracle_scores_one() -> None:
    d = random_dataset()
    s = make_split(d, "last")
    target = dict(zip(s.test.users.tolist(), s.test.targets.tolist(), strict=True))

    def oracle(users: np.ndarray) -> np.ndarray:
        scores = np.zeros((len(users), d.n_items), np.float32)
        scores[np.arange(len(users)), [target[u] for u in users]] = 1.0
        return scores

    metrics = summarise(rank_test(s, oracle), (1, 10), d.n_items)
    assert metrics["recall@1"] == metrics["recall@10"] == metrics["ndcg@10"] == 1.0
    assert metrics["mrr"] == 1.0


def test_a_random_ranker_scores_about_k_over_n() -> None:
    d = random_dataset(n_items=300, n_users=3000, lengths=(3, 5))
    s = make_split(d, "last")
    rng = np.random.default_rng(0)
    ranked = rank_test(s, lambda users: rng.random((len(users), d.n_items)), kmax=30)
    metrics = summarise(ranked, (10, 30), d.n_items)
    candidates = d.n_items - np.diff(s.test.train.matrix(d.n_users, d.n_items).indptr)
    for k in (10, 30):
        expected = float(np.mean(k / candidates[s.test.users]))
        sigma = np.sqrt(expected * (1 - expected) / len(s.test.users))
        assert abs(metrics[f"recall@{k}"] - expected) < 4 * sigma
    assert metrics["coverage@10"] > 0.95  # random top lists cover the catalog


def test_history_products_are_never_hits_nor_recommended() -> None:
    d = random_dataset()
    s = make_split(d, "last")
    history = s.test.train.matrix(d.n_users, d.n_items)
    target = dict(zip(s.test.users.tolist(), s.test.targets.tolist(), strict=True))
    rng = np.random.default_rng(0)

    def history_first(users: np.ndarray) -> np.ndarray:
        scores = rng.random((len(users), d.n_items)).astype(np.float32)
        scores += 10 * history[users].toarray()  # what the user already has, on top
        scores[np.arange(len(users)), [target[u] for u in users]] = 5.0  # then the target
        return scores

    ranked = rank_test(s, history_first)
    assert (ranked.ranks == 0).all()
    for row, u in enumerate(s.test.users):
        assert not set(ranked.top[row].tolist()) & set(history[u].indices.tolist())


def test_ties_count_against_the_target() -> None:
    d = random_dataset()
    s = make_split(d, "last")
    ranked = rank_test(s, lambda users: np.ones((len(users), d.n_items), np.float32))
    assert summarise(ranked, (10,), d.n_items)["recall@10"] == 0.0


def test_popularity_cannot_score_products_without_training_events() -> None:
    d = random_dataset()
    s = make_split(d, "last", cold_fraction=0.2)
    scores = popularity_scorer(s.test.train, d.n_items)(np.array([0, 1]))
    assert np.isneginf(scores[:, s.cold_items]).all()
    cold = rank_test(s, popularity_scorer(s.test.train, d.n_items)).subset(s.test_cold)
    assert summarise(cold, (10,), d.n_items)["recall@10"] == 0.0


# --- ALS --------------------------------------------------------------------------------------

SMALL_GRID = AlsGrid(start={"factors": 8, "regularization": 0.01, "alpha": 1.0,
                            "iterations": 5},
                     sweeps=(("alpha", (1.0, 10.0)), ("factors", (4, 8))), final=())


def test_als_tuning_never_sees_test_targets(tmp_path: Path) -> None:
    d = clustered_dataset()
    s = make_split(d, "last")
    params, valid, trials = tune_als(context(d, s, tmp_path), SMALL_GRID)
    # The same validation phase with scrambled test targets and test training: same choice.
    rng = np.random.default_rng(9)
    scrambled = Phase(s.test.train.select(rng.random(len(s.test.train)) < 0.5), s.test.users,
                      rng.integers(0, d.n_items, len(s.test.users)))
    other = Split(s.kind, s.n_users, s.n_items, s.valid, scrambled, s.cold_items, s.test_cold)
    params2, valid2, trials2 = tune_als(context(d, other, tmp_path), SMALL_GRID)
    assert (params, valid, trials) == (params2, valid2, trials2)
    # the 2 x 2 grid at most, each configuration once: repeats are not refitted
    configs = {(t["alpha"], t["factors"]) for t in trials}
    assert 3 <= len(configs) == len(trials) <= 4


def test_tuned_als_finds_the_clusters(tmp_path: Path) -> None:
    from semrec.evaluation.baselines import run_als

    d = clustered_dataset()
    s = make_split(d, "last")
    (als,) = run_als(context(d, s, tmp_path), SMALL_GRID)
    metrics = summarise(rank_test(s, als.scorer), (10,), d.n_items)
    # A cluster has 25 products, about 6 of them already bought: 10 of ~19 is ~0.5 by chance
    # inside the cluster, 0.1 over the catalog.
    assert metrics["recall@10"] > 0.3
    assert set(als.info["params"]) == {"factors", "regularization", "alpha", "iterations"}


def test_als_search_tries_small_models_and_strong_confidence_on_small_data(
        tmp_path: Path) -> None:
    d = clustered_dataset()  # 100 products, 300 users
    s = make_split(d, "last")
    params, valid, trials = tune_als(context(d, s, tmp_path), AlsGrid())
    tried = {(t["factors"], t["alpha"]) for t in trials}
    assert {16, 32} <= {f for f, _ in tried}
    assert max(a for _, a in tried) >= 40
    assert max(f for f, _ in tried) <= d.n_items  # 128 and 256 factors dropped: 100 items
    assert len(trials) <= AlsGrid().max_fits
    assert {t["iterations"] for t in trials} == {15, 30}
    best = max(trials, key=lambda t: (t["recall@10"], t["mrr"]))
    assert valid["recall@10"] == best["recall@10"]
    assert params["factors"] in (16, 32, 64)


# --- EASE -------------------------------------------------------------------------------------


def pairs_dataset() -> Dataset:
    """Products come in pairs bought together: (0, 1) by 30 users, (2, 3) by 10, (4, 5) by
    20, in either order; P0006 is never bought. User "x" buys 0, then 2, then 1."""
    events = []
    for pair, n in enumerate((30, 10, 20)):
        for u in range(n):
            first, second = (2 * pair, 2 * pair + 1)[:: 1 if u % 2 else -1]
            events += [Event(f"u{pair}-{u}", f"P{first:04d}", 0.0),
                       Event(f"u{pair}-{u}", f"P{second:04d}", 1.0)]
    events += [Event("x", "P0000", 0.0), Event("x", "P0002", 1.0), Event("x", "P0001", 2.0)]
    return make_dataset(products(7), events)


def test_ease_finds_the_partner_product_and_cannot_score_unbought_ones() -> None:
    d = pairs_dataset()
    s = make_split(d, "last")  # x: training 0, validation target 2, test target 1
    assert s.test.users.tolist() == [d.user_ids.index("x")] and s.test.targets.tolist() == [1]
    scorer = fit_ease(s.test.train, d.n_users, d.n_items, 1.0)
    assert np.isneginf(scorer(s.test.users)[0, 6])
    # x has 0 and 2: their partners come first, 1 (30 buyers of the pair) before 3 (10)
    ranked = rank_test(s, scorer, kmax=3)
    assert ranked.ranks.tolist() == [0]
    assert ranked.top[0, :2].tolist() == [1, 3]


def test_ease_weights_match_the_float64_closed_form() -> None:
    import scipy.sparse as sp

    x = sp.random(200, 60, density=0.08, random_state=3, format="csr")  # values != 1
    weights = ease_weights(x, 7.0)
    binary = (x > 0).astype(np.float64)
    p = np.linalg.inv((binary.T @ binary).toarray() + 7.0 * np.eye(60))
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, expected, atol=1e-5)


def test_ease_lambda_is_chosen_on_validation_only_and_refined(tmp_path: Path) -> None:
    d = clustered_dataset()
    s = make_split(d, "last")
    search = EaseSearch(coarse=(1.0, 10.0, 100.0))
    lam, valid, trials = tune_ease(context(d, s, tmp_path), search)
    scrambled = Phase(s.test.train.select(np.arange(len(s.test.train)) % 2 == 0),
                      s.test.users, np.zeros(len(s.test.users), np.int64))
    other = Split(s.kind, s.n_users, s.n_items, s.valid, scrambled, s.cold_items, s.test_cold)
    assert tune_ease(context(d, other, tmp_path), search) == (lam, valid, trials)
    lambdas = sorted(t["lambda"] for t in trials)
    assert {1.0, 10.0, 100.0} <= set(lambdas)
    best = max(trials, key=lambda t: (t["recall@10"], t["mrr"], t["lambda"]))
    assert lam == best["lambda"] and valid["recall@10"] == best["recall@10"]
    # the half decades either side of the best were tried (where inside the bounds)
    for near in (lam / np.sqrt(10), lam * np.sqrt(10)):
        if search.low <= near <= search.high:
            assert any(abs(v - near) / near < 1e-3 for v in lambdas)


# --- confidence intervals ---------------------------------------------------------------------


def test_bootstrap_interval_of_a_known_hit_rate() -> None:
    hits = np.zeros(400)
    hits[:120] = 1.0  # p = 0.3: normal approximation 0.3 +- 1.96 * sqrt(.21 / 400) = 0.045
    low, high = interval(bootstrap_means(hits, 2000, seed=1)[0])
    assert abs(low - 0.255) < 0.01 and abs(high - 0.345) < 0.01
    assert interval(bootstrap_means(np.full(50, 0.25), 200)[0]) == (0.25, 0.25)
    # seeded: the same samples again
    assert (bootstrap_means(hits, 100, seed=1) == bootstrap_means(hits, 100, seed=1)).all()


def ranked_from_hits(hits: np.ndarray) -> Ranked:
    """Rank 0 where ``hits``, rank 100 elsewhere."""
    return Ranked(np.where(hits, 0, 100).astype(np.int64), np.zeros((len(hits), 0), np.int64))


def test_ratio_to_the_best_baseline_is_paired_and_gives_a_verdict() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(2000) < 0.1
    ranked = {"pop": ranked_from_hits(rng.random(2000) < 0.02), "als": ranked_from_hits(base),
              "semrec-mean": ranked_from_hits(base | (rng.random(2000) < 0.1))}
    mask = np.ones(2000, bool)
    points = {n: summarise(r, (10,), 50) for n, r in ranked.items()}
    points["semrec"] = points["semrec-mean"]
    ci, verdict = compare(ranked, mask, (10,), points, ["pop", "als"], "semrec-mean", 500, 0)
    assert verdict["best_baseline"] == "als"
    assert verdict["ratio"] == pytest.approx(points["semrec"]["recall@10"]
                                             / points["als"]["recall@10"], abs=1e-4)
    low, high = ci["ratio"]
    assert 1.0 < low < verdict["ratio"] < high  # semrec hits every user als hits, and more
    assert verdict["at_least_baseline"] and verdict["ratio_ci_above_1"]
    # paired: a model against itself has a ratio of exactly 1 in every resample
    same = {"als": ranked["als"], "semrec-mean": ranked["als"]}
    points["semrec"] = points["als"]
    ci, verdict = compare(same, mask, (10,), points, ["als"], "semrec-mean", 200, 0)
    assert ci["ratio"] == [1.0, 1.0] and ci["difference"] == [0.0, 0.0]
    assert verdict["at_least_baseline"] and not verdict["ratio_ci_above_1"]


def test_a_baseline_that_finds_nothing_has_no_ratio_but_a_difference() -> None:
    ranked = {"als": ranked_from_hits(np.zeros(300, bool)),
              "semrec-mean": ranked_from_hits(np.arange(300) % 5 == 0)}
    points = {n: summarise(r, (10,), 50) for n, r in ranked.items()}
    points["semrec"] = points["semrec-mean"]
    ci, verdict = compare(ranked, np.ones(300, bool), (10,), points, ["als"], "semrec-mean",
                          300, 0)
    assert ci["ratio"] is None and verdict["ratio"] is None
    assert verdict["ratio_ci_above_1"] is None and verdict["difference_ci_above_0"]
    assert ci["difference"][0] > 0.1  # 0.2 of 300 users: far from 0


# --- the command, end to end -----------------------------------------------------------------

KINDS = {
    "shoe": ["running shoe", "trail running shoe", "road running sneaker", "marathon racing "
             "shoe", "cushioned jogging shoe", "lightweight running trainer"],
    "coffee": ["espresso coffee machine", "drip coffee maker", "french press coffee brewer",
               "pour over coffee kettle", "burr coffee grinder", "cold brew coffee maker"],
    "tent": ["two person camping tent", "backpacking dome tent", "family camping tent",
             "ultralight hiking tent", "four season mountaineering tent", "pop up beach tent"],
    "novel": ["mystery crime novel", "science fiction novel", "historical romance novel",
              "fantasy adventure novel", "thriller paperback novel", "literary fiction novel"],
}


def write_data(folder: Path, n_users: int = 80) -> tuple[Path, Path]:
    """4 kinds x 12 products (titles say the kind); each user buys within one kind."""
    folder.mkdir(parents=True, exist_ok=True)
    catalog, events = folder / "catalog.csv", folder / "events.csv"
    rows = [(f"{kind}-{i}", f"{KINDS[kind][i % 6]} model {i}") for kind in KINDS
            for i in range(12)]
    with catalog.open("w", newline="") as f:
        csv.writer(f).writerows([("product_id", "title"), *rows])
    rng = np.random.default_rng(5)
    with events.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("user_id", "product_id", "timestamp", "event"))
        for u in range(n_users):
            kind = list(KINDS)[u % 4]
            for t, i in enumerate(rng.choice(12, int(rng.integers(4, 8)), replace=False)):
                w.writerow((f"u{u}", f"{kind}-{i}", t, "purchase"))
    return catalog, events


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    """One ``semrec evaluate`` run with cold items, through the real CLI."""
    tmp = tmp_path_factory.mktemp("evaluate")
    catalog, events = write_data(tmp / "data")
    home = tmp / "my-home"
    result = CliRunner().invoke(
        app, ["--home", str(home), "evaluate", "--catalog", str(catalog), "--events",
              str(events), "--cold-items", "0.25", "--k", "5,10", "--json",
              str(tmp / "out.json"), "--report", str(tmp / "report")],
        env={"SEMREC_IMAGE__ENABLED": "false"},
    )
    assert result.exit_code == 0, result.output
    return json.loads((tmp / "out.json").read_text()), tmp, home


def test_evaluate_writes_one_result_per_model_and_group(evaluated) -> None:
    result, _, _ = evaluated
    assert result["dataset"] == "data" and result["split"] == "last"
    assert result["users"]["warm"] + result["users"]["cold"] == 80
    assert result["users"]["cold"] > 0
    names = {"popularity", "als", "ease", "semrec", "semrec-mean", "semrec-recency",
             "semrec-trained-sequential-id"}
    for group in ("models", "cold", "all"):
        assert set(result[group]) == names
        for name in names:  # coverage for every model, in every group
            assert set(result[group][name]) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10",
                                                "coverage@5", "coverage@10", "mrr"}
        assert set(result["ci"][group]) == names | {"ratio", "difference"}
    # trained candidates say so in their names; untrained ones do not
    trained = {n for n in names if "tuning" in result["info"].get(n, {})}
    assert trained == {n for n in names if "trained" in n} == {"semrec-trained-sequential-id"}
    assert set(result["als_params"]) == {"factors", "regularization", "alpha", "iterations"}
    assert set(result["ease_params"]) == {"lambda"}
    chosen = result["chosen"]["semrec"]["variant"]
    assert result["models"]["semrec"] == result["models"][chosen]
    assert {"read", "split", "semrec: ingest", "als: tune", "total"} <= set(result["seconds"])
    # --train-minutes (default 15) caps the trained variant, whatever [train] says
    assert result["info"]["semrec-trained-sequential-id"]["train"]["max_minutes"] == 15.0


def test_semrec_ranks_cold_products_that_als_cannot(evaluated) -> None:
    result, _, _ = evaluated
    # Cold products have no training events: interaction-only models never find them...
    assert result["cold"]["als"]["recall@10"] == 0.0
    assert result["cold"]["popularity"]["recall@10"] == 0.0
    # ...while titles alone tell semrec which 12 products fit a user (chance: 10/48).
    assert result["cold"]["semrec"]["recall@10"] > 0.4
    assert result["models"]["semrec"]["recall@10"] > 0.4


def test_all_users_are_the_user_weighted_mix_of_warm_and_cold(evaluated) -> None:
    result, _, _ = evaluated
    n_warm, n_cold = result["users"]["warm"], result["users"]["cold"]
    assert result["users"]["all"] == n_warm + n_cold
    for name, metrics in result["all"].items():
        for metric in ("recall@5", "recall@10", "ndcg@10", "mrr"):
            mix = (n_warm * result["models"][name][metric]
                   + n_cold * result["cold"][name][metric]) / (n_warm + n_cold)
            assert metrics[metric] == pytest.approx(mix, abs=2e-6), (name, metric)
        # coverage is not a mean: all users' top lists cover at least each group's
        assert metrics["coverage@10"] >= max(result["models"][name]["coverage@10"],
                                             result["cold"][name]["coverage@10"])


def test_intervals_hold_the_point_estimates_and_the_verdict_names_the_best_baseline(
        evaluated) -> None:
    result, _, _ = evaluated
    for group in ("models", "cold", "all"):
        for name, metrics in result[group].items():
            low, high = result["ci"][group][name]["recall@10"]
            assert low <= metrics["recall@10"] <= high
        verdict = result["verdict"][group]
        metric = verdict["metric"]
        assert metric == "recall@5"  # the first --k
        best = max(("popularity", "als", "ease"), key=lambda b: result[group][b][metric])
        assert result[group][verdict["best_baseline"]][metric] == result[group][best][metric]
        assert verdict["semrec"] == result["chosen"]["semrec"]["variant"]
        assert verdict["at_least_baseline"] == (result[group]["semrec"][metric]
                                                >= result[group][best][metric])
    # cold: no baseline can score a cold product, so there is no ratio, only a difference
    assert result["verdict"]["cold"]["ratio"] is None
    assert result["verdict"]["cold"]["difference_ci_above_0"]


def test_evaluate_leaves_the_users_data_directory_alone_and_writes_a_report(evaluated) -> None:
    result, tmp, home = evaluated
    assert not home.exists()
    report = (tmp / "report" / "report.md").read_text()
    assert report.count("| ease |") >= 3  # warm, cold, all (and validation)
    low, high = result["ci"]["models"]["als"]["recall@10"]
    assert f"{result['models']['als']['recall@10']:.4f} [{low:.4f}, {high:.4f}]" in report
    for verdict in result["verdict"].values():
        assert verdict["text"] in report
    assert (tmp / "report" / "recall.png").read_bytes()[:4] == b"\x89PNG"


def test_exact_ranking_matches_the_store_search(tmp_path: Path) -> None:
    """Brute force over the stored item vectors gives the store's own (exact) answer."""
    from ingest import read_catalog, read_events
    from semrec.evaluation.semrec_models import item_vectors, user_vectors, vector_scorer
    from semrec.store.base import Filters
    from semrec.workspace import Workspace

    catalog, events = write_data(tmp_path / "data", n_users=12)
    d = make_dataset(read_catalog(catalog).items, read_events(events).items)
    s = make_split(d, "last")
    ctx = context(d, s, tmp_path)
    ctx.settings = ctx.settings.model_copy(
        update={"image": ctx.settings.image.model_copy(update={"enabled": False})})
    vecs = item_vectors(ctx)
    assert vecs.present.all() and vecs.ingest["added"] == d.n_items
    users = user_vectors(s.test.train, d.n_users, vecs.vectors, d.event_kinds, ctx.settings.user)
    ranked = rank_test(s, vector_scorer(users, vecs.vectors, vecs.present), kmax=5)
    history = s.test.train.matrix(d.n_users, d.n_items)
    with Workspace(ctx.settings) as ws:
        for row, u in enumerate(s.test.users):
            exclude = [d.products[i].product_id for i in history[u].indices]
            hits = ws.served_store().search(users[u], 5, Filters().with_exclude(exclude))
            assert [h.product_id for h in hits] == [d.products[i].product_id
                                                    for i in ranked.top[row]]


def test_unknown_models_fail_before_any_work(tmp_path: Path) -> None:
    catalog, events = write_data(tmp_path / "data", n_users=8)
    for model, message in [("nope", "unknown model 'nope'")]:
        result = CliRunner().invoke(
            app, ["--home", str(tmp_path / "home"), "evaluate", "--catalog", str(catalog),
                  "--events", str(events), "--models", f"popularity,{model}"])
        assert result.exit_code == 1
        assert message in result.output
        assert "read" not in result.output  # failed before reading the data
