"""The data an evaluation runs on, and how it is split into what models learn from and what
they must find.

Everything is integer-indexed once: products by catalog order, users by first appearance,
events sorted by (user, time, file order), so a user's history is one contiguous slice.

A split has two *phases*, each a set of training events plus one target product per
evaluated user. ``valid`` is for choosing hyper-parameters; ``test`` is scored once.
The test phase's training events are everything a user did before the test target,
validation target included, so every model (ALS, popularity, semrec pooling) sees the same
history at test time. The valid phase's training never contains a test target.

- ``last``: a user's last event is the test target, the one before it the validation target,
  everything earlier is training. Users with fewer than 3 events are training data only.
- ``temporal``: a global cut at a quantile of all timestamps (default the 90th percentile);
  training is every event before it; a user's test target is their first product after the
  cut that they had not interacted with before it. Validation repeats this inside the
  training period (its own cut at the same quantile of the training timestamps).

A target must be new to the user (it is not in their earlier events): a product already in
the history is excluded from the ranking, so it could never be a hit. Such users are
skipped and counted.

Cold items (``cold_fraction``): a seeded sample of the products that have events is removed
from every training event of both phases. Users whose test target is one of them form the
cold group; validation targets are never cold (nothing could be tuned on them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from semrec.catalog import Event, Product
from semrec.training.data import MIN_EVENTS, leave_last_out

SplitKind = Literal["last", "temporal"]
SPLITS: tuple[str, ...] = ("last", "temporal")


@dataclass(frozen=True)
class Interactions:
    """Events as parallel arrays, sorted by (user, time, file order)."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    times: np.ndarray  # float64
    kinds: np.ndarray  # int64 codes into ``Dataset.event_kinds``

    def __len__(self) -> int:
        return len(self.users)

    def select(self, mask: np.ndarray) -> Interactions:
        return Interactions(self.users[mask], self.items[mask], self.times[mask], self.kinds[mask])

    def matrix(self, n_users: int, n_items: int) -> sp.csr_matrix:
        """User x item interaction counts (float32 CSR); repeated events add up."""
        data = np.ones(len(self.users), np.float32)
        m = sp.csr_matrix((data, (self.users, self.items)), shape=(n_users, n_items))
        m.sum_duplicates()
        return m

    def offsets(self, n_users: int) -> np.ndarray:
        """``offsets[u]:offsets[u + 1]`` is user ``u``'s slice, oldest first."""
        return np.searchsorted(self.users, np.arange(n_users + 1))

    def keys(self, n_items: int) -> np.ndarray:
        """One int64 per (user, item) pair, for fast membership tests."""
        return self.users * n_items + self.items


@dataclass(frozen=True)
class Dataset:
    """A catalog and its events, integer-indexed."""

    name: str
    products: list[Product]
    user_ids: list[str]
    event_kinds: tuple[str, ...]
    events: Interactions
    unknown_product_events: int = 0  # events naming products not in the catalog (dropped)

    @property
    def n_items(self) -> int:
        return len(self.products)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def product_ids(self) -> list[str]:
        return [p.product_id for p in self.products]


def make_dataset(products: Sequence[Product], events: Sequence[Event],
                 name: str = "dataset") -> Dataset:
    """Index ``products`` and ``events``; events naming unknown products are dropped."""
    index = {p.product_id: i for i, p in enumerate(products)}
    users: dict[str, int] = {}
    kinds: dict[str, int] = {}
    rows = [(users.setdefault(e.user_id, len(users)), index[e.product_id], e.timestamp,
             kinds.setdefault(e.event, len(kinds))) for e in events if e.product_id in index]
    arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
    u, it, ts, kd = (arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2],
                     arr[:, 3].astype(np.int64))
    order = np.lexsort((np.arange(len(u)), ts, u))  # user, then time, then file order
    interactions = Interactions(u[order], it[order], ts[order], kd[order])
    return Dataset(name, list(products), list(users), tuple(kinds), interactions,
                   unknown_product_events=len(events) - len(rows))


def load_dataset(catalog: Path | str, events: Path | str) -> Dataset:
    """Read a catalog and an events file with the ``ingest`` readers; bad rows are skipped
    (``ValueError`` if either file has no good row at all)."""
    from ingest import read_catalog, read_events

    products = read_catalog(catalog).items
    read = read_events(events).items
    if not products or not read:
        raise ValueError(f"nothing to evaluate: {len(products)} products, {len(read)} events")
    return make_dataset(products, read, name=Path(catalog).resolve().parent.name)


@dataclass(frozen=True)
class Phase:
    """One scoring round: models learn from ``train``; ``users[i]`` must find ``targets[i]``."""

    train: Interactions
    users: np.ndarray
    targets: np.ndarray


@dataclass(frozen=True)
class Split:
    kind: str
    n_users: int
    n_items: int
    valid: Phase
    test: Phase
    cold_items: np.ndarray  # sorted product indices kept out of all training
    test_cold: np.ndarray  # bool per test user: their target is a cold item
    info: dict[str, Any] = field(default_factory=dict)

    def groups(self) -> dict[str, np.ndarray]:
        """Boolean masks over ``test.users``: ``warm`` and (when any) ``cold``."""
        out = {"warm": ~self.test_cold}
        if self.test_cold.any():
            out["cold"] = self.test_cold
        return out


def make_split(dataset: Dataset, kind: str = "last", cold_fraction: float = 0.0,
               seed: int = 0, quantile: float = 0.9) -> Split:
    """Split ``dataset`` by ``kind`` (see the module docstring), with cold items."""
    if kind not in SPLITS:
        raise ValueError(f"unknown split {kind!r}: use one of {', '.join(SPLITS)}")
    if not 0.0 <= cold_fraction < 1.0:
        raise ValueError(f"--cold-items must be in [0, 1), not {cold_fraction}")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"the temporal quantile must be in (0, 1), not {quantile}")
    ev, n_items = dataset.events, dataset.n_items
    cold = _cold_items(ev.items, cold_fraction, seed)
    warm = ~np.isin(ev.items, cold)
    if kind == "last":
        valid, test, info = _last(ev, dataset.n_users)
    else:
        valid, test, info = _temporal(ev, n_items, quantile)
    (valid_train, valid_users, valid_targets), (test_train, test_users, test_targets) = valid, test
    keep = ~np.isin(valid_targets, cold)
    info["valid_cold_targets_dropped"] = int((~keep).sum())
    return Split(
        kind=kind, n_users=dataset.n_users, n_items=n_items,
        valid=Phase(ev.select(valid_train & warm), valid_users[keep], valid_targets[keep]),
        test=Phase(ev.select(test_train & warm), test_users, test_targets),
        cold_items=cold, test_cold=np.isin(test_targets, cold), info=info,
    )


_Raw = tuple[np.ndarray, np.ndarray, np.ndarray]  # (train mask, users, targets)


def _last(ev: Interactions, n_users: int) -> tuple[_Raw, _Raw, dict[str, Any]]:
    info: dict[str, Any] = {"users_too_short": int((np.diff(ev.offsets(n_users))
                                                     < MIN_EVENTS).sum())}
    phases = []
    for name, back in (("valid", 2), ("test", 1)):
        train, at, repeats = leave_last_out(ev.users, ev.items, back)
        info[f"{name}_repeat_targets_skipped"] = repeats
        phases.append((train, ev.users[at], ev.items[at]))
    return phases[0], phases[1], info


def _temporal(ev: Interactions, n_items: int,
              quantile: float) -> tuple[_Raw, _Raw, dict[str, Any]]:
    cut = float(np.quantile(ev.times, quantile))
    test_train = ev.times < cut
    vcut = float(np.quantile(ev.times[test_train], quantile)) if test_train.any() else cut
    valid_train = ev.times < vcut
    info: dict[str, Any] = {"quantile": quantile, "cut": cut, "valid_cut": vcut}
    phases = []
    for name, train, period in (("valid", valid_train, test_train & ~valid_train),
                                ("test", test_train, ~test_train)):
        users, targets, stats = _first_new(ev, n_items, train, period)
        info.update({f"{name}_{k}": v for k, v in stats.items()})
        phases.append((train, users, targets))
    return phases[0], phases[1], info


def _first_new(ev: Interactions, n_items: int, before: np.ndarray,
               after: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Per user with events ``before``: the first product ``after`` not seen ``before``."""
    keys = ev.keys(n_items)
    known = np.unique(ev.users[before])
    candidate = np.flatnonzero(after & ~np.isin(keys, keys[before]) & np.isin(ev.users, known))
    users, first = np.unique(ev.users[candidate], return_index=True)  # events are time-sorted
    acting = np.unique(ev.users[after])
    stats = {"users_without_history": int((~np.isin(acting, known)).sum()),
             "users_only_repeats": int(np.isin(acting, known).sum() - len(users))}
    return users, ev.items[candidate[first]], stats


def _cold_items(items: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` of the products that have events."""
    if fraction <= 0:
        return np.zeros(0, np.int64)
    seen = np.unique(items)
    n = int(round(fraction * len(seen)))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(seen, size=n, replace=False)).astype(np.int64)
