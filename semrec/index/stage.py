"""Catalog -> frozen features -> item tower -> vector store, as four plain steps:

    plan    each product's text and image cache keys and content hash, and whether it
            must be (re)indexed under the version being written
    encode  the texts and images the feature cache lacks, once per content and encoder
    embed   item vectors from cached features with a version's tower, ID table and word
            table: the fused one (with the learnt terms) and each modality's own (without)
    write   upsert into the version's store first, the catalog rows second

``ingest`` runs all four for products, into the served version (``semrec ingest``,
``PUT /items``, repair). ``write_all`` re-embeds every catalog row into a version's own store
from the cache, no encoder running (training's re-index), and ``catch_up`` brings a newly
served version up to date with what was written under the old one meanwhile.

A run that dies between the store and the catalog table leaves rows the next run sees as
not yet indexed, and upserts are idempotent.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from semrec.catalog import ImageSource, Product
from semrec.faults import failpoint
from semrec.state import FeatureCache, ProductRow, feature_key
from semrec.store import VectorStore
from semrec.towers import ItemTower, VersionItems
from semrec.towers.words import product_words
from semrec.workspace import Workspace

BATCH = 1024  # products per step: larger calls let sentence-transformers sort by length


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
    model_version: str = ""
    #: (version, kind) replaced because it was built on other encoders or weights.
    switched_from: tuple[str, str] | None = None

    def timed(self, stage: str, started: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


@dataclass
class Planned:
    """One product on its way into the index."""

    product: Product
    content_hash: str
    text: str
    text_key: str
    image_key: str | None
    existing: ProductRow | None

    def row(self, version: str) -> ProductRow:
        modalities = ("text", "image") if self.image_key else ("text",)
        image = self.product.image
        return ProductRow(
            product_id=self.product.product_id, payload=self.product.payload(),
            content_hash=self.content_hash, text_key=self.text_key, image_key=self.image_key,
            image_path=str(image) if image else None, modalities=modalities,
            model_version=version)


# -- the pipeline --------------------------------------------------------------------------
def ingest(ws: Workspace, products: Sequence[Product], images: ImageSource,
           on_progress: Callable[[int], None] | None = None,
           force: bool = False) -> IngestReport:
    """Index ``products`` (upsert) into the served version, creating an untrained one on a
    new data directory; unchanged ones are skipped without encoding, unless ``force`` (a
    repair: re-plan each, encoding whatever the cache lacks).

    When the configured encoders or weights differ from those the served version was built
    on, one index must never mix two embedding spaces: a new untrained version on the
    configured encoders is built with every catalog product (each re-planned from its
    stored row, so only the modality whose encoder changed is re-encoded), and served once
    complete; ``report.switched_from`` names the version replaced (a trained one too: its
    heads were trained on the old features)."""
    version = ws.served_version(create=True)
    report = IngestReport(model_version=version)
    replaced = None
    if not ws.built_on_configured_encoders(version):
        replaced, version = version, ws.new_untrained()
        report.model_version = version
        report.switched_from = (replaced, ws.manifest(replaced).kind)
        mine = {p.product_id for p in products}
        rest = [Product.from_payload(r.payload) for r in ws.products.all()
                if r.product_id not in mine]
        _index(ws, version, rest, _stored_images(ws), report, force=True)
    _index(ws, version, products, images, report, force, on_progress)
    failpoint("ingest:optimize")
    started = time.perf_counter()
    store = ws.store(version)
    store.optimize()
    report.timed("optimize", started)
    if replaced is not None:
        ws.models.promote(version, store)
        ws.close_store(replaced)
    return report


def _index(ws: Workspace, version: str, products: Sequence[Product], images: ImageSource,
           report: IngestReport, force: bool,
           on_progress: Callable[[int], None] | None = None) -> None:
    # Batches of texts of like length: the text encoder pads each call to its longest
    # text, so this makes batched encoding as cheap as one call over the whole catalog.
    products = sorted(products, key=lambda p: len(p.text()))
    for start in range(0, len(products), BATCH):
        batch = products[start:start + BATCH]
        _ingest_batch(ws, version, batch, images, report, force)
        if on_progress:
            on_progress(len(batch))


def _stored_images(ws: Workspace) -> ImageSource:
    """Images of products already in the catalog, read from their stored paths (checked
    against the allowed folders when they were first ingested)."""
    from ingest import image_source

    image = ws.settings.image
    return image_source(image.max_pixels, None, allow_urls=image.allow_urls,
                        url_timeout_s=image.url_timeout_s,
                        max_download_bytes=image.max_download_bytes)


def _ingest_batch(ws: Workspace, version: str, batch: Sequence[Product], images: ImageSource,
                  report: IngestReport, force: bool) -> None:
    started = time.perf_counter()
    work = plan(ws, batch, images, report)
    report.timed("plan", started)
    todo = [w for w in work if force or needs_indexing(ws, w, version)]
    report.unchanged += len(work) - len(todo)
    if not todo:
        return
    encode(ws, todo, images, report)
    failpoint("ingest:features-cached")
    started = time.perf_counter()
    rows = [w.row(version) for w in todo]
    vectors = embed_rows(ws.features, ws.items(version), rows)
    report.timed("tower", started)
    started = time.perf_counter()
    write(ws, ws.store(version), ws.items(version), rows, vectors)
    report.timed("index", started)
    for w in todo:
        if w.existing is None:
            report.added += 1
        else:
            report.updated += 1
            if w.image_key and not w.existing.image_key:
                report.images_added += 1


def pending(ws: Workspace, products: Sequence[Product], images: ImageSource) -> list[str]:
    """The IDs among ``products`` that ``ingest`` would (re)index: new, changed, built by
    another model version, or able to gain an image. Writes nothing."""
    version = ws.served_version()
    return [w.product.product_id for w in plan(ws, products, images, IngestReport())
            if needs_indexing(ws, w, version)]


# -- plan ----------------------------------------------------------------------------------
def plan(ws: Workspace, products: Sequence[Product], images: ImageSource,
         report: IngestReport) -> list[Planned]:
    """What each product needs. An image that cannot be used (missing, unsafe, a corrupt
    header, too many pixels: checked here even when no image encoder is available) is
    reported with its product's ID and left out: the product is indexed from its text."""
    existing = ws.products.get_many(p.product_id for p in products)
    ids = ws.encoders.ids()
    out = []
    for product in products:
        text = product.text()
        digest = None
        if product.image is not None:
            try:
                digest = images.digest(product.image)
                if images.check is not None:
                    images.check(product.image)
            except Exception as exc:  # noqa: BLE001 - any unreadable image costs the image
                digest = None
                report.image_errors.append((product.product_id, _reason(exc)))
        out.append(Planned(
            product=product, content_hash=product_hash(product.payload(), digest), text=text,
            text_key=feature_key(ids["text"], text),
            image_key=feature_key(ids["image"], digest) if (ids["image"] and digest) else None,
            existing=existing.get(product.product_id)))
    return out


def product_hash(payload: dict[str, Any], image_digest: str | None) -> str:
    """A catalog row's ``content_hash``: its payload and the sha256 of its image's bytes
    (None without a usable image). What changes it is what re-indexes a product; the image
    endpoint recomputes it to serve only the bytes a product was indexed from."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{text}\0{image_digest}".encode()).hexdigest()


def needs_indexing(ws: Workspace, w: Planned, version: str) -> bool:
    """New, changed, built by another version, encoded by other encoders or weights than
    the configured ones (its cache keys differ: two embedding spaces must never share an
    index), or able to gain an image now."""
    old = w.existing
    if old is None or old.content_hash != w.content_hash or old.model_version != version:
        return True
    if old.text_key != w.text_key or (old.image_key is not None
                                      and old.image_key != w.image_key):
        return True
    if w.image_key is not None and old.image_key is None:
        cached = not ws.features.missing([w.image_key])
        return cached or ws.encoders.image() is not None
    return False


# -- encode --------------------------------------------------------------------------------
def encode(ws: Workspace, todo: list[Planned], images: ImageSource,
           report: IngestReport) -> None:
    """Cache the features ``todo`` lacks. Without an image encoder, or for an image that
    fails to load, the product goes on text-only (its ``image_key`` cleared)."""
    missing_text = ws.features.missing(w.text_key for w in todo)
    missing_image = ws.features.missing(w.image_key for w in todo if w.image_key)
    if missing_text:
        encoder = ws.encoders.text()
        started = time.perf_counter()
        texts = {w.text_key: w.text for w in todo if w.text_key in missing_text}
        vectors = encoder.encode_text(list(texts.values()))
        with ws.conn:
            ws.features.put(encoder.id, list(texts), vectors)
        report.texts_encoded += len(texts)
        report.timed("encode_text", started)
    if not missing_image:
        return
    encoder = ws.encoders.image()
    wanted = list({w.image_key: w for w in todo if w.image_key in missing_image}.values())
    failed: set[str | None] = set()
    if encoder is None:
        report.image_problem = ws.encoders.image_problem
        failed = {w.image_key for w in wanted}  # text-only; a later run adds the image
    else:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:  # decode while the encoder works
            loaded = list(pool.map(lambda w: _load(images, w), wanted))
        report.timed("load_images", started)
        ok = [(w, im) for w, im in zip(wanted, loaded, strict=True) if not isinstance(im, str)]
        for w, im in zip(wanted, loaded, strict=True):
            if isinstance(im, str):
                report.image_errors.append((w.product.product_id, im))
                failed.add(w.image_key)
        if ok:
            started = time.perf_counter()
            vectors = encoder.encode_image([im for _, im in ok])
            with ws.conn:
                ws.features.put(encoder.id, [w.image_key for w, _ in ok], vectors)
            report.images_encoded += len(ok)
            report.timed("encode_image", started)
    for w in todo:
        if w.image_key in failed:
            w.image_key = None


def _load(images: ImageSource, w: Planned) -> Any:
    try:
        return images.load(w.product.image)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - reported per product; the text still gets indexed
        return _reason(exc)


def _reason(exc: Exception) -> str:
    """What is wrong with an image, without its path (``ImageError.reason`` when given)."""
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) else f"{type(exc).__name__}: {exc}"


# -- embed ---------------------------------------------------------------------------------
def embed_cached(features: FeatureCache, tower: ItemTower, text_keys: Sequence[str],
                 image_keys: Sequence[str | None]) -> np.ndarray:
    """Item vectors from cached frozen features (no encoder runs): one product per pair of
    keys; a product whose image key is None gets no image term. Every key must be cached."""
    text, image, has_image = features.matrix(text_keys, image_keys, tower.config.image_dim)
    return tower.embed(text, image, has_image)


@dataclass(frozen=True)
class Embedded:
    """What a product's point holds: its fused vector, and each modality's own unit vector
    (``MODALITIES``; an all-zero row where the product lacks the modality)."""

    fused: np.ndarray
    by_modality: dict[str, np.ndarray]


def embed_rows(features: FeatureCache, items: VersionItems,
               rows: Sequence[ProductRow]) -> Embedded:
    """The indexed vectors of catalog ``rows`` under ``items``' version, from cached
    features: the tower's fused vector plus the product's ID embedding and word term where
    the version has them, and the tower's per-modality vectors. The learnt terms are left
    out of those: they are learnt from behaviour, while "similar by look" must be the look alone."""
    tower = items.tower
    text, image, has_image = features.matrix([r.text_key for r in rows],
                                             [r.image_key for r in rows],
                                             tower.config.image_dim)
    fused = items.vectors([r.product_id for r in rows], tower.embed(text, image, has_image),
                          row_words(rows, items))
    return Embedded(fused, tower.embed_modalities(text, image, has_image))


def embed(features: FeatureCache, items: VersionItems,
          rows: Sequence[ProductRow]) -> np.ndarray:
    """The fused indexed vectors of catalog ``rows`` under ``items``' version, from cached
    features: the tower's vector, plus the product's ID embedding and word term where the
    version has them."""
    content = embed_cached(features, items.tower, [r.text_key for r in rows],
                           [r.image_key for r in rows])
    return items.vectors([r.product_id for r in rows], content, row_words(rows, items))


def row_words(rows: Sequence[ProductRow], items: VersionItems) -> list[list[str]] | None:
    """The words of catalog ``rows`` where ``items``' version learnt word vectors."""
    if items.words is None:
        return None
    return [product_words(Product.from_payload(r.payload)) for r in rows]


def point_payload(row: ProductRow, items: VersionItems) -> dict[str, Any]:
    """What a product's point carries: its catalog fields, which modalities its vector used,
    which model version made it and, for a trained version, whether the product is ``new``
    to it (no training events: feeds boost it, see ``Recommender``)."""
    payload = {**row.payload, "modalities": list(row.modalities),
               "model_version": items.version}
    if items.trained is not None:
        payload["new"] = row.product_id not in items.trained
    return payload


# -- write ---------------------------------------------------------------------------------
def write(ws: Workspace, store: VectorStore, items: VersionItems, rows: Sequence[ProductRow],
          vectors: Embedded) -> None:
    """Upsert ``rows`` into ``store``, then record them (as built by ``items``' version) in
    the catalog table."""
    store.upsert([r.product_id for r in rows], vectors.fused,
                 [point_payload(r, items) for r in rows], vectors.by_modality)
    failpoint("ingest:store-written")
    with ws.conn:
        ws.products.put([replace(r, model_version=items.version) for r in rows])
    failpoint("ingest:batch-done")


def reindex_rows(ws: Workspace, rows: Sequence[ProductRow]) -> None:
    """Re-embed catalog ``rows`` from the feature cache (no encoder runs) into the served
    version. Every feature key of ``rows`` must be cached."""
    version = ws.served_version()
    store, items = ws.store(version), ws.items(version)
    for start in range(0, len(rows), BATCH):
        batch = list(rows[start:start + BATCH])
        write(ws, store, items, batch, embed_rows(ws.features, items, batch))
    store.optimize()


def write_all(ws: Workspace, version: str,
              on_progress: Callable[[int], None] | None = None) -> int:
    """Embed every catalog row with ``version`` from cached features into that version's
    own store (not served yet: nobody else has it open), and mark each row that did not
    change meanwhile as built by ``version``. Safe beside a server that writes the served
    version: whatever it writes during this is caught up on the switch (``catch_up``).
    Returns the number of products written."""
    store, items = ws.store(version), ws.items(version)
    rows = list(ws.products.all())
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        vectors = embed_rows(ws.features, items, batch)
        store.upsert([r.product_id for r in batch], vectors.fused,
                     [point_payload(r, items) for r in batch], vectors.by_modality)
        with ws.conn:
            ws.products.mark_built(version, [(r.product_id, r.content_hash) for r in batch])
        if on_progress:
            on_progress(len(batch))
    store.optimize()
    if store.count() < len(rows):
        raise RuntimeError(f"re-index of {version} holds {store.count()} of {len(rows)} "
                           "products; not served")
    return len(rows)


def catch_up(ws: Workspace, version: str) -> int:
    """Bring ``version``'s store up to the catalog: re-embed the rows built by another
    version (written while ``version`` was being built) and drop points whose product has
    been deleted since. Run by the owner that switches to ``version``, before it serves it.
    Returns how many products changed."""
    store, items = ws.store(version), ws.items(version)
    stale = ws.products.not_built_by(version)
    for start in range(0, len(stale), BATCH):
        batch = stale[start:start + BATCH]
        write(ws, store, items, batch, embed_rows(ws.features, items, batch))
    indexed = list(store.product_ids())
    orphans = sorted(set(indexed) - ws.products.known(indexed))
    if orphans:
        store.delete(orphans)
    if stale or orphans:
        store.optimize()
    return len(stale) + len(orphans)


def delete(ws: Workspace, product_ids: Sequence[str]) -> int:
    """Remove products from the served index, then from the catalog; gone from every query
    when this returns. A crash in between leaves catalog rows without vectors (searches
    never return them; popularity still could): deleting again finishes the job. Returns
    how many were in the catalog."""
    known = ws.products.known(product_ids)
    ws.store(ws.served_version()).delete(list(product_ids))
    with ws.conn:
        ws.products.delete(list(product_ids))
    return len(known)
