"""``semrec verify``: do the catalog, the feature cache, the events and the index agree?

Checks, each a ``Finding`` kind (``repair`` fixes every one of them):

- ``missing_from_index``: a catalog row whose product is not in the served index
  (re-embedded from the feature cache and upserted);
- ``orphan_in_index``: a point in the index with no catalog row (deleted from the index);
- ``stale_in_index``: a point whose payload or model version differs from its catalog row
  (re-embedded and upserted);
- ``missing_features``: a catalog row whose text or image features are not cached (the
  product is rebuilt from its stored fields, its features re-encoded and its vector
  re-indexed);
- ``corrupt_feature``: a cached vector whose byte length does not match its dimension
  (re-encoded in place from the products that use it);
- ``foreign_encoder``: a product indexed from features that another encoder (or other
  weights) made than the configured one: a mix of embedding spaces in one index (the
  product is re-planned, which re-encodes it with the configured encoder);
- ``no_modality_vectors``: the served index was built before per-modality vectors (an old
  semrec), so ``similar --by image|text`` cannot search it (the collection is recreated
  with them and every catalog row re-embedded from the feature cache);
- ``stale_popularity``: ``product_stats`` disagrees with the events (recounted);
- with a catalog file: ``not_indexed`` for a product of the file that is new or changed
  since it was indexed (ingested).

Events naming products that are not in the catalog are counted, not fixed: they are kept on
purpose (those products may come later). Repairs are idempotent; run verify again after a
repair and it finds nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from semrec.catalog import ImageSource, Product
from semrec.index.stage import ingest, pending, reindex_rows
from semrec.state import ProductRow
from semrec.workspace import Workspace

#: Payload fields the index adds to a catalog row's own (``new``: under a trained version).
_INDEX_FIELDS = ("modalities", "model_version", "new")


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str  # a product ID or feature key
    detail: str


@dataclass
class VerifyReport:
    findings: list[Finding] = field(default_factory=list)
    repaired: int = 0
    remaining: list[Finding] = field(default_factory=list)  # found again after a repair
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.findings))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts, "differences": self.by_kind(),
                "repaired": self.repaired, "remaining": len(self.remaining),
                "findings": [f.__dict__ for f in self.findings[:1000]]}


def verify(ws: Workspace, images: ImageSource, catalog: Sequence[Product] | None = None,
           repair: bool = False) -> VerifyReport:
    """Compare catalog rows, feature cache, events, the served index (and ``catalog``, when
    given); with ``repair``, fix every difference found (``images`` reads product images
    for products that must be re-encoded)."""
    version = ws.served_version()
    report = VerifyReport()
    rows = {r.product_id: r for r in ws.products.all()}
    corrupt = _corrupt_features(ws)
    report.findings += [Finding("corrupt_feature", key, reason) for key, reason in corrupt]
    foreign = _foreign_encoder(ws)
    report.findings += [Finding("foreign_encoder", pid, f"{modality} features made by "
                                f"{made_by}, the config names {wanted}")
                        for pid, modality, made_by, wanted in foreign]
    missing = _missing_features(ws, rows.values())
    report.findings += [Finding("missing_features", pid, "text or image features not cached")
                        for pid in missing]
    index_findings, stored = _index_differences(ws, rows, version)
    report.findings += index_findings
    if not ws.store(version).modalities:
        report.findings.append(Finding("no_modality_vectors", version, (
            "the index has no per-modality vectors (built by an older semrec): "
            "`similar --by image|text` needs them")))
    stats = _stale_popularity(ws)
    report.findings += [Finding("stale_popularity", pid, f"{have} counted, {want} events")
                        for pid, have, want in stats]
    changed = pending(ws, catalog, images) if catalog is not None else []
    report.findings += [Finding("not_indexed", pid, "new or changed in the catalog file")
                        for pid in changed]
    report.counts = {"products": len(rows), "indexed": stored, "features": ws.features.count(),
                     "events": ws.events.count(), "events_unknown_product": _unknown_events(ws)}
    if repair and report.findings:
        report.repaired = _repair(ws, images, rows, report.findings, catalog, changed)
        report.remaining = verify(ws, images, catalog).findings
    return report


def _index_differences(ws: Workspace, rows: dict[str, ProductRow],
                       version: str) -> tuple[list[Finding], int]:
    findings: list[Finding] = []
    store = ws.store(version)
    stored_ids = set(store.product_ids())
    for pid in sorted(stored_ids - rows.keys()):
        findings.append(Finding("orphan_in_index", pid, "in the index, not in the catalog"))
    for pid in sorted(rows.keys() - stored_ids):
        findings.append(Finding("missing_from_index", pid, "in the catalog, not in the index"))
    both = sorted(rows.keys() & stored_ids)
    for start in range(0, len(both), 1024):
        for item in store.get(both[start:start + 1024], with_vectors=False):
            row = rows[item.product_id]
            own = {k: v for k, v in item.payload.items() if k not in _INDEX_FIELDS}
            if own != row.payload:
                findings.append(Finding("stale_in_index", row.product_id, "payload differs"))
            elif (item.payload.get("model_version") != version
                  or row.model_version != version):
                findings.append(Finding("stale_in_index", row.product_id,
                                        f"built by {item.payload.get('model_version')}, "
                                        f"served version is {version}"))
    return findings, len(stored_ids)


def _missing_features(ws: Workspace, rows: Any) -> list[str]:
    rows = list(rows)
    keys = {r.text_key for r in rows} | {r.image_key for r in rows if r.image_key}
    lost = ws.features.missing(keys)
    return [r.product_id for r in rows if r.text_key in lost or r.image_key in lost]


def _foreign_encoder(ws: Workspace) -> list[tuple[str, str, str, str]]:
    """(product, modality, the encoder that made its features, the configured one) for
    every product whose features another encoder made."""
    found = []
    for modality, wanted in ws.encoders.ids().items():
        if wanted is None:
            continue
        query = (f"SELECT p.product_id, f.encoder FROM products p JOIN features f "
                 f"ON f.key = p.{modality}_key WHERE f.encoder != ? ORDER BY p.product_id")
        found += [(pid, modality, made_by, wanted)
                  for pid, made_by in ws.conn.execute(query, (wanted,))]
    return found


def _corrupt_features(ws: Workspace) -> list[tuple[str, str]]:
    query = ("SELECT key, dim, length(vector) FROM features "
             "WHERE dim < 1 OR length(vector) != 4 * dim")
    return [(key, f"{size} bytes for dimension {dim}")
            for key, dim, size in ws.conn.execute(query)]


def _stale_popularity(ws: Workspace) -> list[tuple[str, int, int]]:
    want = dict(ws.conn.execute("SELECT product_id, COUNT(*) FROM events GROUP BY product_id"))
    have = dict(ws.conn.execute("SELECT product_id, events FROM product_stats"))
    return [(pid, have.get(pid, 0), want.get(pid, 0))
            for pid in sorted(want.keys() | have.keys()) if have.get(pid, 0) != want.get(pid, 0)]


def _unknown_events(ws: Workspace) -> int:
    query = ("SELECT COUNT(*) FROM events e LEFT JOIN products p USING (product_id) "
             "WHERE p.product_id IS NULL")
    return ws.conn.execute(query).fetchone()[0]


def _repair(ws: Workspace, images: ImageSource, rows: dict[str, ProductRow],
            findings: list[Finding], catalog: Sequence[Product] | None,
            changed: list[str]) -> int:
    kinds: dict[str, set[str]] = {}
    for f in findings:
        kinds.setdefault(f.kind, set()).add(f.subject)
    if kinds.get("no_modality_vectors"):  # rebuilt empty: every row is missing from it
        ws.store(ws.served_version()).recreate()
        kinds["missing_from_index"] = set(rows)
        kinds.pop("orphan_in_index", None)
    if kinds.get("orphan_in_index"):
        ws.store(ws.served_version()).delete(sorted(kinds["orphan_in_index"]))
    if kinds.get("corrupt_feature"):
        _reencode_corrupt(ws, images, rows, kinds["corrupt_feature"])
    rebuild = kinds.get("missing_features", set()) | kinds.get("foreign_encoder", set())
    if rebuild:  # force a re-plan: a changed hash re-encodes whatever is not cached
        ingest(ws, [_product(rows[pid]) for pid in sorted(rebuild)], images, force=True)
    embed = (kinds.get("missing_from_index", set()) | kinds.get("stale_in_index", set())) - rebuild
    if embed:
        reindex_rows(ws, [rows[pid] for pid in sorted(embed)])
    if kinds.get("stale_popularity"):
        with ws.conn:
            ws.conn.execute("DELETE FROM product_stats")
            ws.conn.execute("INSERT INTO product_stats (product_id, events) "
                            "SELECT product_id, COUNT(*) FROM events GROUP BY product_id")
    if changed and catalog is not None:
        wanted = set(changed)
        ingest(ws, [p for p in catalog if p.product_id in wanted], images)
    return len(findings)


def _reencode_corrupt(ws: Workspace, images: ImageSource, rows: dict[str, ProductRow],
                      keys: set[str]) -> None:
    """Overwrite corrupt text features with a fresh encoding, and drop corrupt image
    features' use (their products are re-planned, which re-reads the image)."""
    texts = {r.text_key: _product(r).text() for r in rows.values() if r.text_key in keys}
    if texts:
        encoder = ws.encoders.text()
        vectors = encoder.encode_text(list(texts.values()))
        with ws.conn:
            for key, vector in zip(texts, vectors, strict=True):
                ws.conn.execute("UPDATE features SET dim = ?, vector = ? WHERE key = ?",
                                (vector.shape[0], vector.astype("<f4").tobytes(), key))
    lost_images = [r for r in rows.values() if r.image_key in keys]
    if lost_images:
        with ws.conn:
            ws.conn.execute(f"UPDATE products SET image_key = NULL WHERE image_key IN "
                            f"({','.join('?' * len(keys))})", sorted(keys))
            ws.conn.execute(f"DELETE FROM features WHERE key IN ({','.join('?' * len(keys))})",
                            sorted(keys))
        ingest(ws, [_product(r) for r in lost_images], images, force=True)
    users = {r.product_id for r in rows.values() if r.text_key in keys}
    if users:
        reindex_rows(ws, [r for pid, r in rows.items() if pid in users])


def _product(row: ProductRow) -> Product:
    """The product a catalog row was built from (its payload holds every field)."""
    return Product.from_payload({**row.payload, "product_id": row.product_id})
