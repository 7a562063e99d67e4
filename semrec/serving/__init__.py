"""Serving: queries (``recommender.py``), the HTTP API (``api.py``) and the serving CLI
commands (``cli.py``), all built on a ``semrec.workspace.Workspace``."""
