"""Named crash points for fault-injection tests: ``failpoint("ingest:store-written")``
kills this process with SIGKILL, as a power cut or the OOM killer would, when the
environment variable ``SEMREC_FAILPOINT`` names that point. Unset (always, outside tests),
a failpoint is one dictionary lookup.

Points: ``model:saved`` (a model version written, not yet current), ``edge:created`` (a new
shard folder, no payload indexes yet), ``ingest:features-cached`` (a batch's features
committed, nothing indexed), ``ingest:store-written`` (a batch in the vector store, not yet in
the products table), ``ingest:batch-done`` (a batch fully committed), ``ingest:optimize``
(every batch written, the store not yet optimised and flushed).
"""

from __future__ import annotations

import os
import signal

ENV = "SEMREC_FAILPOINT"


def failpoint(name: str) -> None:
    """SIGKILL this process if ``SEMREC_FAILPOINT`` is ``name``."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
