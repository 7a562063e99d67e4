"""The indexing stage: products in, vectors in the store (``stage.py``), and the check that
catalog, feature cache, events and index agree (``verify.py``)."""

from __future__ import annotations

from semrec.index.stage import (
    BATCH,
    Embedded,
    IngestReport,
    catch_up,
    delete,
    embed,
    embed_cached,
    embed_rows,
    ingest,
    pending,
    point_payload,
    product_hash,
    reindex_rows,
    write_all,
)

__all__ = ["BATCH", "Embedded", "IngestReport", "catch_up", "delete", "embed", "embed_cached",
           "embed_rows", "ingest", "pending", "point_payload", "product_hash", "reindex_rows",
           "write_all"]
