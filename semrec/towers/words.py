"""Learnt word embeddings: what a catalog's words mean to its shoppers.

The frozen text encoder knows what "Call of Duty" or "PlayStation 4" means in English; it
cannot know that the people who buy one buy the other. A trained version therefore also
learns one vector per *word* of the products it was trained on, and adds the mean of a
product's word vectors to its content vector (``towers/item.py: add_terms``):

    v = normalise( tower(features) + id + sum_w word_w / sqrt(#words) )

A word is shared by many products, so unlike an ID embedding it reaches the products the
version never saw: a product ingested after training gets the learnt vectors of the words it
shares with trained products at once (a new game of a known series, a known brand). Words
are the title's words and word pairs, the category's and brand's words, and each short
structured value (category, brand, attributes) whole. The vocabulary is the words of at
least ``MIN_PRODUCTS`` trained products (a word of one product is only its ID again), the
``MAX_WORDS`` commonest; any other word is ignored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from semrec.catalog import Product

#: A word: a run of letters and digits (any script), lower-cased.
WORD = re.compile(r"\w+")
#: A vocabulary word appears in at least this many trained products ...
MIN_PRODUCTS = 2
#: ... and is among this many of the commonest.
MAX_WORDS = 50_000
#: A structured value longer than this is free text: its words count, not the whole value.
MAX_VALUE_CHARS = 60


def product_words(product: Product) -> list[str]:
    """The words of ``product`` that can have a learnt vector, without repeats: the title's
    words and adjacent pairs, the category's and brand's words, and each structured value
    (category, brand, attribute) whole. The description is left out: long free text."""
    title = WORD.findall(product.title.lower())
    words = [*title, *(f"{a} {b}" for a, b in zip(title, title[1:], strict=False))]
    fields = [("category", product.category), ("brand", product.brand),
              *sorted(product.attributes.items())]
    for key, value in fields:
        if not value:
            continue
        if key in ("category", "brand"):
            words += WORD.findall(value.lower())
        if len(value) <= MAX_VALUE_CHARS:
            words.append(f"{key}={value.strip().lower()}")
    return list(dict.fromkeys(words))


def vocabulary(words: Sequence[Sequence[str]], trained: np.ndarray) -> list[str]:
    """The words of at least ``MIN_PRODUCTS`` of the ``trained`` products (a mask parallel
    to ``words``), commonest first (then alphabetically), at most ``MAX_WORDS``."""
    counts = Counter(w for i in np.flatnonzero(trained) for w in set(words[i]))
    common = sorted((w for w, c in counts.items() if c >= MIN_PRODUCTS),
                    key=lambda w: (-counts[w], w))
    return common[:MAX_WORDS]


def word_rows(words: Sequence[Sequence[str]], vocab: dict[str, int]) -> list[list[int]]:
    """Each product's vocabulary rows (its other words have no vector)."""
    return [[vocab[w] for w in ws if w in vocab] for ws in words]


@dataclass(frozen=True)
class WordTable:
    """A version's learnt word vectors: ``table[i]`` is word ``words[i]``'s."""

    words: list[str]
    table: np.ndarray

    def __post_init__(self) -> None:
        if len(self.words) != len(self.table):
            raise ValueError(f"{len(self.words)} words for {len(self.table)} word vectors")

    @cached_property
    def rows(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def vectors(self, words: Sequence[Sequence[str]] | None) -> np.ndarray:
        """Each product's word term, float32 (n, dim): the sum of its known words' vectors
        over the square root of their count; zero for a product with none. ``words`` None
        (a caller that does not know the products' words) is an error."""
        if words is None:
            raise ValueError("these vectors include learnt word vectors: the products' words "
                             "are needed to embed them")
        rows = word_rows(words, self.rows)
        counts = np.array([len(r) for r in rows], np.int64)
        out = np.zeros((len(rows), self.table.shape[1]), np.float32)
        has = counts > 0
        if has.any():  # one pass over every product's rows, summed per product
            flat = self.table[np.concatenate([r for r in rows if r])]
            starts = (np.cumsum(counts) - counts)[has]
            out[has] = np.add.reduceat(flat, starts, axis=0) / np.sqrt(counts[has])[:, None]
        return out
