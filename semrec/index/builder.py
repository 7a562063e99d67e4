"""Catalog -> frozen features -> item tower -> vector store: the indexing stage.

Each product's text and image are encoded once and cached by a hash of exactly what was
encoded; the tower turns cached features into the indexed vector. So re-ingesting an
unchanged catalog encodes nothing, a changed title re-encodes that product alone, and
re-indexing with new heads (``reindex``) never touches an encoder.

Writes go to the vector store first and the catalog table second: a run that dies between
the two leaves rows the next run sees as not yet indexed, and upserts are idempotent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semrec.catalog import Product
from semrec.encoders import Encoder, EncoderUnavailable
from semrec.faults import failpoint
from semrec.index.base import VectorStore
from semrec.state import FeatureCache, ProductRow, ProductTable, feature_key
from semrec.towers import ItemTower
from semrec.towers.registry import VersionItems

if TYPE_CHECKING:
    import sqlite3

    from PIL.Image import Image

log = logging.getLogger(__name__)

BATCH = 1024  # products per step: larger calls let sentence-transformers sort by length


@dataclass(frozen=True)
class ImageSource:
    """How images are read: ``digest(path)`` (cache key) and ``load(path)`` (RGB image).
    ``path`` is a ``Path``, or an http(s) URL as ``str`` when URLs are enabled. Both raise
    with a readable message when the file or URL is missing, unsafe or corrupt."""

    digest: Callable[[Path | str], str]
    load: Callable[[Path | str], Image]


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    images_added: int = 0
    texts_encoded: int = 0
    images_encoded: int = 0
    #: (product_id, reason): the reason names no path, so an API may show it to a client.
    image_errors: list[tuple[str, str]] = field(default_factory=list)
    image_problem: str | None = None  # set when running text-only for want of weights
    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, stage: str, started: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


@dataclass
class _Work:
    product: Product
    content_hash: str
    text: str
    text_key: str
    image_digest: str | None
    image_key: str | None
    existing: ProductRow | None


class IndexBuilder:
    """Indexes products with one version (its tower, ID table and trained products) into
    one store."""

    def __init__(self, conn: sqlite3.Connection, store: VectorStore, items: VersionItems,
                 text_encoder: Callable[[], Encoder],
                 image_encoder: Callable[[], Encoder] | None, encoder_ids: dict[str, str | None],
                 images: ImageSource) -> None:
        self.conn = conn
        self.store = store
        self.items = items
        self._text_factory = text_encoder
        self._image_factory = image_encoder
        self._text: Encoder | None = None
        self._image: Encoder | None = None
        self.image_problem: str | None = None if image_encoder else "image encoder disabled"
        self.encoder_ids = encoder_ids  # {"text": id, "image": id}, known without loading
        self.images = images
        self.features = FeatureCache(conn)
        self.products = ProductTable(conn)

    @property
    def model_version(self) -> str:
        return self.items.version

    def text_encoder(self) -> Encoder:
        """Loaded on first need: an unchanged catalog never loads it."""
        if self._text is None:
            self._text = self._text_factory()
        return self._text

    def image_encoder(self) -> Encoder | None:
        """Loaded on first need; None when the weights cannot be had: the run goes on
        text-only and ``image_problem`` (reported once, in the ingest report) says why."""
        if self._image is None and self.image_problem is None and self._image_factory:
            try:
                self._image = self._image_factory()
            except EncoderUnavailable as exc:
                log.info("image encoder unavailable, indexing text only: %s", exc)
                self.image_problem = str(exc)
        return self._image

    def ingest(self, products: Sequence[Product],
               on_progress: Callable[[int], None] | None = None,
               force: bool = False) -> IngestReport:
        """Index ``products`` (upsert); unchanged ones are skipped without encoding, unless
        ``force`` (a repair: re-plan each, encoding whatever the cache lacks)."""
        report = IngestReport()
        # Batches of texts of like length: the text encoder pads each call to its longest
        # text, so this makes batched encoding as cheap as one call over the whole catalog.
        products = sorted(products, key=lambda p: len(p.text()))
        for start in range(0, len(products), BATCH):
            batch = products[start:start + BATCH]
            self._ingest_batch(batch, report, force)
            if on_progress:
                on_progress(len(batch))
        failpoint("ingest:optimize")
        started = time.perf_counter()
        self.store.optimize()
        report.timed("optimize", started)
        report.image_problem = self.image_problem if report.image_problem else None
        return report

    def pending(self, products: Sequence[Product]) -> list[str]:
        """The IDs among ``products`` that ``ingest`` would (re)index: new, changed, built
        by another model version, or able to gain an image. Writes nothing."""
        existing = self.products.get_many(p.product_id for p in products)
        scratch = IngestReport()
        return [p.product_id for p in products
                if self._needs_indexing(self._plan(p, existing.get(p.product_id), scratch))]

    def reindex_rows(self, rows: Sequence[ProductRow]) -> None:
        """Re-embed catalog rows from the feature cache (no encoder runs) and upsert them,
        then record this builder's model version on them. Every feature key of ``rows``
        must be cached (``FeatureCache.get`` raises ``KeyError`` otherwise)."""
        for start in range(0, len(rows), BATCH):
            batch = list(rows[start:start + BATCH])
            vectors = embed_rows(self.features, self.items, batch)
            fresh = [replace(r, model_version=self.model_version) for r in batch]
            self.store.upsert([r.product_id for r in fresh], vectors,
                              [point_payload(r, self.items) for r in fresh])
            with self.conn:
                self.products.put(fresh)
        self.store.optimize()

    def _ingest_batch(self, batch: Sequence[Product], report: IngestReport,
                      force: bool = False) -> None:
        started = time.perf_counter()
        existing = self.products.get_many(p.product_id for p in batch)
        work = [self._plan(p, existing.get(p.product_id), report) for p in batch]
        report.timed("plan", started)
        todo = [w for w in work if force or self._needs_indexing(w)]
        report.unchanged += len(work) - len(todo)
        if not todo:
            return
        self._encode_missing(todo, report)
        failpoint("ingest:features-cached")
        started = time.perf_counter()
        rows = [self._row(w) for w in todo]
        vectors = embed_rows(self.features, self.items, rows)
        report.timed("tower", started)
        started = time.perf_counter()
        self.store.upsert([r.product_id for r in rows], vectors,
                          [point_payload(r, self.items) for r in rows])
        failpoint("ingest:store-written")
        with self.conn:
            self.products.put(rows)
        failpoint("ingest:batch-done")
        report.timed("index", started)
        for w in todo:
            if w.existing is None:
                report.added += 1
            else:
                report.updated += 1
                if w.image_key and not w.existing.image_key:
                    report.images_added += 1

    def _plan(self, product: Product, existing: ProductRow | None,
              report: IngestReport) -> _Work:
        text = product.text()
        digest = None
        if product.image is not None:
            try:
                digest = self.images.digest(product.image)
            except Exception as exc:  # the image source explains what is wrong
                report.image_errors.append((product.product_id, _reason(exc)))
        payload = json.dumps(product.payload(), sort_keys=True, ensure_ascii=False)
        content_hash = hashlib.sha256(f"{payload}\0{digest}".encode()).hexdigest()
        image_id = self.encoder_ids.get("image")
        return _Work(
            product=product, content_hash=content_hash, text=text,
            text_key=feature_key(self.encoder_ids["text"], text), image_digest=digest,
            image_key=feature_key(image_id, digest) if (image_id and digest) else None,
            existing=existing,
        )

    def _needs_indexing(self, w: _Work) -> bool:
        old = w.existing
        if old is None or old.content_hash != w.content_hash:
            return True
        if old.model_version != self.model_version:
            return True
        if old.text_key != w.text_key or old.image_key not in (None, w.image_key):
            return True  # an encoder or its weights changed: encode again, from the files
        # Unchanged, but indexed text-only while its image could now be added.
        if w.image_key is not None and old.image_key is None:
            cached = not self.features.missing([w.image_key])
            return cached or self.image_encoder() is not None
        return False

    def _encode_missing(self, todo: list[_Work], report: IngestReport) -> None:
        missing_text = self.features.missing(w.text_key for w in todo)
        missing_image = self.features.missing(w.image_key for w in todo if w.image_key)
        if missing_text:
            encoder = self.text_encoder()
            started = time.perf_counter()
            texts = {w.text_key: w.text for w in todo if w.text_key in missing_text}
            vectors = encoder.encode_text(list(texts.values()))
            with self.conn:
                self.features.put(encoder.id, list(texts), vectors)
            report.texts_encoded += len(texts)
            report.timed("encode_text", started)
        if missing_image:
            image_encoder = self.image_encoder()
            if image_encoder is None:
                report.image_problem = self.image_problem
                for w in todo:
                    if w.image_key in missing_image:
                        w.image_key = None  # index text-only; a later run adds the image
            else:
                self._encode_images(image_encoder, todo, missing_image, report)

    def _encode_images(self, encoder: Encoder, todo: list[_Work], missing: set[str],
                       report: IngestReport) -> None:
        wanted = [w for w in todo if w.image_key in missing]
        wanted = list({w.image_key: w for w in wanted}.values())
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:  # decode while the encoder works
            loaded = list(pool.map(self._load_image, wanted))
        report.timed("load_images", started)
        ok = [(w, im) for w, im in zip(wanted, loaded, strict=False) if not isinstance(im, str)]
        for w, reason in zip(wanted, loaded, strict=False):
            if isinstance(reason, str):
                report.image_errors.append((w.product.product_id, reason))
        failed = {w.image_key for w, im in zip(wanted, loaded, strict=False) if isinstance(im, str)}
        for w in todo:
            if w.image_key in failed:
                w.image_key = None
        if ok:
            started = time.perf_counter()
            vectors = encoder.encode_image([im for _, im in ok])
            with self.conn:
                self.features.put(encoder.id, [w.image_key for w, _ in ok], vectors)
            report.images_encoded += len(ok)
            report.timed("encode_image", started)

    def _load_image(self, w: _Work) -> Any:
        try:
            return self.images.load(w.product.image)
        except Exception as exc:  # reported per product; the text still gets indexed
            return _reason(exc)

    def _row(self, w: _Work) -> ProductRow:
        modalities = ("text", "image") if w.image_key else ("text",)
        return ProductRow(
            product_id=w.product.product_id, payload=w.product.payload(),
            content_hash=w.content_hash, text_key=w.text_key, image_key=w.image_key,
            image_path=str(w.product.image) if w.product.image else None,
            modalities=modalities, model_version=self.model_version,
        )



def embed_cached(features: FeatureCache, tower: ItemTower, text_keys: Sequence[str],
                 image_keys: Sequence[str | None]) -> np.ndarray:
    """Item vectors from cached frozen features (no encoder runs): one product per pair of
    keys; a product whose image key is None gets no image term. Every key must be cached."""
    text = features.get(list(text_keys))
    keyed = [i for i, key in enumerate(image_keys) if key is not None]
    if not keyed:
        return tower.embed(text)
    image = np.zeros((len(text_keys), tower.config.image_dim), np.float32)
    image[keyed] = features.get([image_keys[i] for i in keyed])
    has_image = np.zeros(len(text_keys), bool)
    has_image[keyed] = True
    return tower.embed(text, image, has_image)


def embed_rows(features: FeatureCache, items: VersionItems,
               rows: Sequence[ProductRow]) -> np.ndarray:
    """The indexed vectors of catalog ``rows`` under ``items``' version, from cached
    features: the tower's vector, plus the product's ID embedding where it has one."""
    content = embed_cached(features, items.tower, [r.text_key for r in rows],
                           [r.image_key for r in rows])
    return items.vectors([r.product_id for r in rows], content)


def point_payload(row: ProductRow, items: VersionItems) -> dict[str, Any]:
    """What a product's point carries: its catalog fields, which modalities its vector used,
    which model version made it and, for a trained version, whether the product is ``new``
    to it (no training events: feeds boost it, see ``Recommender``)."""
    payload = {**row.payload, "modalities": list(row.modalities),
               "model_version": items.version}
    if items.trained is not None:
        payload["new"] = row.product_id not in items.trained
    return payload


def _reason(exc: Exception) -> str:
    """What is wrong with an image, without its path (``ImageError.reason`` when given)."""
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) else f"{type(exc).__name__}: {exc}"
