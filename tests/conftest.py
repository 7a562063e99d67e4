"""Shared test fixtures: real, small components.

- the bundled all-MiniLM-L6-v2 (loaded from its package, offline);
- a tiny open_clip model, created here with random weights and saved to disk, then loaded
  through open_clip's real config + checkpoint loading code;
- Qdrant Edge shards in temporary folders.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TINY_CLIP = "semrec-tiny-clip"


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SEMREC_* setting from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("SEMREC_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An open_clip architecture config and a checkpoint of random weights for it."""
    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("tiny-clip")
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                       "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1},
    }
    config_file = folder / f"{TINY_CLIP}.json"
    config_file.write_text(json.dumps(config))
    open_clip.add_model_config(config_file)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP)
    checkpoint = folder / "tiny-clip.pt"
    torch.save(model.state_dict(), checkpoint)
    return {"model": TINY_CLIP, "model_config_file": str(config_file),
            "pretrained": str(checkpoint)}


def write_config(home: Path, image: dict[str, object] | None = None) -> Path:
    """Write ``<home>/semrec.toml``; by default the image encoder may not download and has
    no fallback (no CLIP weights: text-only, fast)."""
    image = {"allow_download": False, "fallback": "", **(image or {})}
    lines = ["[image]"] + [f"{key} = {json.dumps(value)}" for key, value in image.items()]
    home.mkdir(parents=True, exist_ok=True)
    path = home / "semrec.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def api_client(home: Path, **update: object):  # noqa: ANN201 - a generator of TestClients
    """The HTTP API on ``home`` through FastAPI's test client (settings from ``home``, with
    ``update`` applied); the service is closed afterwards."""
    from fastapi.testclient import TestClient

    from semrec.config import load_settings
    from semrec.serving.api import ApiService, create_app

    service = ApiService(load_settings(home=home).model_copy(update=update))
    try:
        with TestClient(create_app(service), raise_server_exceptions=False) as client:
            yield client
    finally:
        service.close()
