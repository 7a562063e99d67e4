"""The two towers as training sees them, and the retrieval task (the loss).

``ItemEncoder`` wraps the serving ``ItemTower`` (heads over frozen features held as
buffers) and, optionally, one ID embedding per product; ``PoolingUsers`` is the recency
mean written as a differentiable, all-positions-at-once operation; ``SampledSoftmax`` is the
loss. The model only wires these together (``trainer.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from semrec.config import UserSettings
from semrec.towers.item import ItemTower
from semrec.towers.words import WordTable, word_rows
from semrec.training.data import ItemFeatures


class ItemEncoder(nn.Module):
    """Item vectors ``normalise(tower(features_i) + id_i + words_i)``, the ID and word terms
    only where enabled.

    ``id_dropout`` drops the ID term per product and step during training, so the content
    path alone stays a good vector: what a product ingested after training gets. Only
    products in ``seen`` (those with training events) have an ID term at all: a product that
    is only ever a sampled negative would otherwise learn to be far from everyone, which is
    wrong for a product nobody has had the chance to buy yet.

    ``words`` (``towers/words.py``), the vocabulary, adds a learnt vector per word: a
    product's word term is the sum of its words' vectors over the square root of their
    count. Words start at zero, like IDs, so the untrained encoder is the content tower.
    """

    def __init__(self, tower: ItemTower, features: ItemFeatures, id_embeddings: bool,
                 id_dropout: float = 0.0, seen: np.ndarray | None = None,
                 words: list[str] | None = None) -> None:
        super().__init__()
        self.tower = tower
        self.register_buffer("text", torch.from_numpy(np.asarray(features.text, np.float32)))
        has_image = features.image is not None
        self.register_buffer("image", torch.from_numpy(np.asarray(features.image, np.float32))
                             if has_image else None)
        self.register_buffer("has_image", torch.from_numpy(np.asarray(features.has_image, bool))
                             if has_image else None)
        self.ids = nn.Embedding(len(features), tower.config.dim) if id_embeddings else None
        if self.ids is not None:
            nn.init.zeros_(self.ids.weight)  # an unseen product keeps exactly its content
        seen_mask = np.ones(len(features), bool) if seen is None else np.asarray(seen, bool)
        self.register_buffer("seen", torch.from_numpy(seen_mask))
        self.id_dropout = id_dropout
        self.words, self.vocabulary = None, list(words or [])
        if words:  # each product's word rows, flat (CSR): memory by words, not by title length
            assert features.words is not None, "a vocabulary needs the products' words"
            rows = word_rows(features.words, {w: i for i, w in enumerate(words)})
            counts = torch.tensor([len(r) for r in rows], dtype=torch.long)
            self.register_buffer("word_flat", torch.tensor([w for r in rows for w in r],
                                                           dtype=torch.int32))
            self.register_buffer("word_start", torch.cumsum(counts, 0) - counts)
            self.register_buffer("word_count", counts)
            # zeros, drawing nothing from the seeded generator: the rest starts as without words
            self.words = nn.EmbeddingBag(len(words), tower.config.dim, mode="sum",
                                         _weight=torch.zeros(len(words), tower.config.dim))

    def word_terms(self, index: torch.Tensor) -> torch.Tensor:
        """Products ``index``'s word terms: their words' vectors summed, over the square
        root of their count (zero for a product without known words)."""
        counts = self.word_count[index]
        bag_starts = torch.cumsum(counts, 0) - counts
        within = torch.arange(int(counts.sum())) - torch.repeat_interleave(bag_starts, counts)
        flat = self.word_flat[torch.repeat_interleave(self.word_start[index], counts) + within]
        summed = self.words(flat.long(), bag_starts)
        return summed / counts.clamp_min(1).float().sqrt().unsqueeze(1)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        image = self.image[index] if self.image is not None else None
        mask = self.has_image[index] if self.has_image is not None else None
        vector = self.tower(self.text[index], image, mask)
        if self.ids is None and self.words is None:
            return vector
        if self.words is not None:
            vector = vector + self.word_terms(index)
        if self.ids is not None:
            ids = self.ids(index) * self.seen[index, None]
            if self.training and self.id_dropout > 0:
                keep = torch.rand(len(index), 1, device=ids.device) >= self.id_dropout
                ids = ids * keep
            vector = vector + ids
        return nn.functional.normalize(vector, dim=-1, eps=1e-12)

    def word_table(self) -> WordTable | None:
        """The learnt word vectors, one row per vocabulary word (None without words)."""
        if self.words is None:
            return None
        return WordTable(self.vocabulary, self.words.weight.detach().numpy().copy())

    @torch.no_grad()
    def all_vectors(self, batch: int = 8192) -> torch.Tensor:
        was = self.training
        self.eval()
        out = torch.cat([self(torch.arange(s, min(s + batch, len(self.text))))
                         for s in range(0, len(self.text), batch)])
        self.train(was)
        return out


class PoolingUsers(nn.Module):
    """The parameter-free user tower at every position: row ``t`` is the weighted mean of
    events ``0..t``, each weighing its ``weights`` (its event type's weight, from
    ``data.event_weights``; all the same when None) times the recency decay
    (``UserSettings.pooling``/``half_life``): the weights ``towers/user.py``'s
    ``history_weights`` gives the same history when serving, so the vector is the same."""

    def __init__(self, user: UserSettings, max_len: int) -> None:
        super().__init__()
        age = torch.arange(max_len)[:, None] - torch.arange(max_len)[None, :]
        decay = (torch.ones_like(age, dtype=torch.float32) if user.pooling == "mean"
                 else torch.pow(0.5, age.float() / user.half_life))
        self.register_buffer("weights", torch.where(age >= 0, decay, 0.0), persistent=False)

    def forward(self, items: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``items`` (b, L, d), ``weights`` (b, L) per event, or None: (b, L, d) users."""
        length = items.shape[1]
        if weights is not None:
            items = items * weights[..., None]
        pooled = self.weights[:length, :length] @ items
        return nn.functional.normalize(pooled, dim=-1, eps=1e-12)


class SampledSoftmax:
    """Softmax over the batch's positives plus shared sampled negatives, with logQ; or,
    ``full``, over every product with training events (no sampling, so no correction).

    Candidates are the unique products among the batch's targets and ``negatives`` uniform
    samples of the products ``seen`` in training. Products without training events are never
    candidates: a product ingested after training was never a negative either, and one that
    only ever appears as a negative is learnt to be far from everyone, which ruins the
    content vectors of new products (measured: cold recall@10 0.003 instead of 0.05).
    A product's expected count among them is ``P * pop_i + N / n``; subtracting its
    log removes the bias of popular products being candidates (hence negatives) more often
    than the full softmax would make them (Yi et al., 2019).
    """

    def __init__(self, popularity: np.ndarray, negatives: int, temperature: float,
                 logq: bool, seen: np.ndarray | None = None, full: bool = False) -> None:
        counts = np.asarray(popularity, np.float64)
        self.prob = torch.from_numpy(counts / max(counts.sum(), 1.0)).float()
        pool = np.arange(len(counts)) if seen is None else np.flatnonzero(seen)
        self.pool = torch.from_numpy(pool.astype(np.int64))
        self.n_items = max(len(pool), 1)
        self.negatives = negatives
        self.temperature = temperature
        self.logq = logq and not full
        self.full = full

    def candidates(self, targets: torch.Tensor,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(unique candidate products, each target's column among them)."""
        if self.full:
            return self.pool, torch.searchsorted(self.pool, targets)
        sampled = self.pool[torch.randint(0, len(self.pool), (self.negatives,),
                                          generator=generator)]
        unique, inverse = torch.unique(torch.cat([targets, sampled]), return_inverse=True)
        return unique, inverse[:len(targets)]

    def loss(self, users: torch.Tensor, candidates: torch.Tensor, items: torch.Tensor,
             labels: torch.Tensor, positions: int) -> torch.Tensor:
        """``users`` (P, d), candidate vectors ``items`` (M, d) of products ``candidates``."""
        users = users / self.temperature  # (P, d), not the (P, M) logits: fewer operations
        if not self.logq:
            return nn.functional.cross_entropy(users @ items.T, labels)
        expected = positions * self.prob[candidates] + self.negatives / self.n_items
        logits = torch.addmm(-torch.log(expected.clamp_min(1e-12)), users, items.T)
        return nn.functional.cross_entropy(logits, labels)

