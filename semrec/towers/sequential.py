"""The trained sequential user tower: a small causal transformer (SASRec-style) over the
item vectors of a user's history, oldest first.

    h_t = Transformer( W_in e_1 + p_1, ..., W_in e_t + p_t )      causal: t sees 1..t only
    u   = normalise( W_out h_T + mean(e_1..e_T) )                 T = the newest event

The mean of the history is a residual path: before any training the tower is the plain mean
pooling, and the transformer learns what order adds to it (which makes it learn much faster
than a transformer alone in the few epochs a CPU budget allows).

Its input is exactly what the index stores (the item tower's L2-normalised vectors), so
serving needs nothing but the stored vectors of the history: no product IDs, no features.
A user is served from their first interaction, and a product indexed after training is
both a valid input and a valid candidate. Only the newest ``max_len`` events are read;
positions count from the oldest of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class SequentialConfig:
    dim: int
    max_len: int = 50
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


class SequentialUserTower(nn.Module):
    """Causal transformer; ``forward`` gives a user vector after every position."""

    def __init__(self, config: SequentialConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.input = nn.Linear(d, d)
        self.positions = nn.Embedding(config.max_len, d)
        nn.init.normal_(self.positions.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(d, config.heads, dim_feedforward=2 * d,
                                           dropout=config.dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(config.dropout)
        self.output = nn.Linear(d, d)
        nn.init.zeros_(self.output.weight)  # untrained, the tower is exactly the mean pooling
        nn.init.zeros_(self.output.bias)
        causal = torch.triu(torch.full((config.max_len, config.max_len), float("-inf")), 1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, items: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``items`` (b, L, dim) item vectors, oldest first, right-padded (padding only
        after each sequence's end, so the causal mask keeps it out of every real position).
        Returns (b, L, dim) unit user vectors: row ``t`` is the user after event ``t``.
        ``weights`` (event types) are not read, in training as in serving: the tower learns
        from the order of the history alone (taken so that every user tower is called
        alike)."""
        length = items.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"sequence of {length} > max_len {self.config.max_len}")
        x = self.input(items) + self.positions.weight[:length]
        x = self.encoder(self.drop(x), mask=self.causal[:length, :length], is_causal=True)
        counts = torch.arange(1, length + 1, dtype=items.dtype, device=items.device)[:, None]
        mean = torch.cumsum(items, dim=1) / counts  # causal: row t averages events 0..t
        return nn.functional.normalize(self.output(self.norm(x)) + mean, dim=-1, eps=1e-12)

    @torch.inference_mode()
    def user_vector(self, item_vectors: np.ndarray) -> np.ndarray:
        """The unit vector of one history (n, dim), oldest first; zeros when empty."""
        if len(item_vectors) == 0:
            return np.zeros(self.config.dim, np.float32)
        self.eval()
        window = np.asarray(item_vectors[-self.config.max_len:], np.float32)
        out = self(torch.from_numpy(window)[None])
        return out[0, -1].numpy().astype(np.float32)

    @torch.inference_mode()
    def user_vectors(self, item_vectors: np.ndarray, histories: list[np.ndarray],
                     batch: int = 512) -> np.ndarray:
        """Batched ``user_vector``: ``histories[i]`` indexes rows of ``item_vectors`` (n, dim),
        oldest first. Zeros for an empty history."""
        table = torch.from_numpy(np.asarray(item_vectors, np.float32))
        return user_vectors(self, table, histories, self.config.max_len, batch).numpy()


@torch.no_grad()
def user_vectors(users: nn.Module, item_vectors: torch.Tensor, histories: list[np.ndarray],
                 max_len: int | None = None, batch: int = 512,
                 weights: list[np.ndarray] | None = None) -> torch.Tensor:
    """Each history's user vector after its newest event (zeros for an empty one), for any
    causal user tower ``users`` ((b, L, d) item vectors and (b, L) event weights in, a user
    vector per position out: the sequential tower, or training's pooling), in batches of
    like length; only the newest ``max_len`` events of a history are read. ``weights[i]``
    weighs history ``i``'s events (by type; None: all 1)."""
    users.eval()
    out = torch.zeros(len(histories), item_vectors.shape[1])
    limit = max_len or max((len(h) for h in histories), default=1)
    order = np.argsort([len(h) for h in histories], kind="stable")
    for start in range(0, len(order), batch):
        rows = [r for r in order[start:start + batch] if len(histories[r])]
        if not rows:
            continue
        windows = [histories[r][-limit:] for r in rows]
        length = max(len(w) for w in windows)
        index = torch.zeros(len(rows), length, dtype=torch.long)
        valid = torch.zeros(len(rows), length, dtype=torch.bool)
        weight = torch.zeros(len(rows), length)
        for i, (r, w) in enumerate(zip(rows, windows, strict=True)):
            index[i, :len(w)] = torch.from_numpy(np.asarray(w, np.int64))
            valid[i, :len(w)] = True
            weight[i, :len(w)] = (1.0 if weights is None else
                                  torch.from_numpy(np.asarray(weights[r][-limit:], np.float32)))
        x = item_vectors[index] * valid[..., None]
        last = torch.tensor([len(w) - 1 for w in windows])
        out[rows] = users(x, weight)[torch.arange(len(rows)), last]
    return out
