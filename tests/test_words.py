"""Tests for ``semrec.towers.words``: which words a product has, the vocabulary a trained
version learns, and a product's word term."""

from __future__ import annotations

import numpy as np
import pytest

from semrec.catalog import Product
from semrec.towers.words import MIN_PRODUCTS, WordTable, product_words, vocabulary


def test_product_words_are_title_words_pairs_and_structured_values() -> None:
    product = Product("P1", "Super Mario Odyssey - Nintendo Switch", description="A long story",
                      category="Video Games", brand="Nintendo",
                      attributes={"platform": "Switch", "blurb": "x" * 200})
    words = product_words(product)
    assert words[:6] == ["super", "mario", "odyssey", "nintendo", "switch", "super mario"]
    assert "mario odyssey" in words and "nintendo switch" in words
    assert {"video", "games", "category=video games", "brand=nintendo",
            "platform=switch"} <= set(words)
    assert not any(w.startswith("blurb=") for w in words)  # free text, not a value
    assert "story" not in words  # the description is left out
    assert len(words) == len(set(words))


def test_vocabulary_keeps_words_shared_by_trained_products_commonest_first() -> None:
    words = [["a", "b"], ["a", "c"], ["a", "b", "d"], ["d", "e"], ["d", "e"]]
    trained = np.array([True, True, True, True, False])
    assert MIN_PRODUCTS == 2
    # e is shared only with an untrained product; c is in one product
    assert vocabulary(words, trained) == ["a", "b", "d"]


def test_word_term_is_the_sum_over_the_root_of_the_known_words() -> None:
    table = WordTable(["a", "b"], np.array([[1.0, 0.0], [0.0, 2.0]], np.float32))
    out = table.vectors([["a", "b", "unknown"], ["unknown"], ["b"]])
    np.testing.assert_allclose(out, [[1 / np.sqrt(2), 2 / np.sqrt(2)], [0, 0], [0, 2]])
    with pytest.raises(ValueError, match="the products' words are needed"):
        table.vectors(None)
    with pytest.raises(ValueError, match="2 words for 1 word vectors"):
        WordTable(["a", "b"], np.zeros((1, 2), np.float32))
