"""The embedded state: one SQLite database under the data directory.

Tables: ``products`` (the catalog as indexed, with the keys of its cached features),
``features`` (the frozen feature cache), ``events`` and ``product_stats`` (popularity).
"""

from __future__ import annotations

from semrec.state.db import connect
from semrec.state.events import EventLog, InsertReport
from semrec.state.features import FeatureCache, feature_key
from semrec.state.products import ProductRow, ProductTable

__all__ = [
    "EventLog", "FeatureCache", "InsertReport", "ProductRow", "ProductTable", "connect",
    "feature_key",
]
