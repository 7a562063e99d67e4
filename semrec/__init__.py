"""semrec: a multimodal semantic product recommender.

Stages, each its own subpackage: ``encoders`` (frozen text/image encoders) ->
``towers`` (trainable item and user towers) -> ``index`` (vector stores) ->
``serving`` (CLI and HTTP API). ``state`` holds the embedded SQLite database
(catalog, frozen feature cache, events). Catalog files are read by the
top-level ``ingest`` package.
"""

from __future__ import annotations

__version__ = "0.1.0"
