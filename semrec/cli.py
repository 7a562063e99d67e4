"""The ``semrec`` command: the serving commands plus ``evaluate`` and ``train``.

Composed here, above the stages, so that serving never imports training or evaluation.
"""

from __future__ import annotations

from semrec.evaluation.cli import evaluate
from semrec.serving.cli import app
from semrec.training.cli import train

app.command()(evaluate)
app.command()(train)

__all__ = ["app"]
