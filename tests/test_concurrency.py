"""Queries keep being answered, complete and without errors, while writes run: a real
``semrec serve`` process, reader threads hammering it over HTTP, a CLI ``semrec ingest`` in
another process (sent through the server, which owns the index) and a re-index built beside
the served version and promoted. Also the API key, end to end."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ingest import image_source, read_catalog, read_events
from semrec.config import load_settings
from semrec.index import ingest as index_ingest
from semrec.towers import ItemTower, ItemTowerConfig
from semrec.training.reindex import build_version, serve_version
from semrec.workspace import Workspace
from tests.conftest import FIXTURES, write_config

KEY = "s3cret-key"
K = 10


def get(url: str, key: str | None = None, method: str = "GET", body: object = None) -> tuple:
    request = urllib.request.Request(url, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a generator
    home = tmp_path_factory.mktemp("served")
    write_config(home, {"enabled": False, "allowed_roots": [str(home / "catalogs")]})
    with Workspace(load_settings(home=home), role="test") as ws:
        index_ingest(ws, read_catalog(FIXTURES / "catalog.csv").items, image_source())
        ws.events.add(read_events(FIXTURES / "events.csv").items)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SEMREC_")},
           "SEMREC_API_KEY": KEY}
    semrec = str(Path(sys.executable).parent / "semrec")
    process = subprocess.Popen([semrec, "--home", str(home), "serve", "--port", str(port)],
                               env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if get(f"{url}/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(process.stderr.read())
    yield {"url": url, "home": home, "env": env, "semrec": semrec}
    process.terminate()
    process.wait(timeout=30)
    assert not (home / "server.json").exists()


def test_writes_need_the_key_reads_do_not(server: dict) -> None:
    url = server["url"]
    event = {"events": [{"user_id": "U500", "product_id": "P0001", "event": "view"}]}
    assert get(f"{url}/events", method="POST", body=event)[0] == 401
    assert get(f"{url}/events", key="wrong", method="POST", body=event)[0] == 401
    assert get(f"{url}/items/P0001", method="DELETE")[0] == 401
    status, body = get(f"{url}/items", method="PUT", body={"items": [{"product_id": "X",
                                                                      "title": "t"}]})
    assert status == 401 and "API key" in body["detail"]
    assert get(f"{url}/events", key=KEY, method="POST", body=event)[0] == 200
    assert get(f"{url}/items/P0001/similar")[0] == 200


def test_queries_answer_fully_during_ingest_and_reindex(server: dict) -> None:
    """Readers query without pause while a CLI ingest (re-encoding changed titles) goes
    through the server and a new version is built beside it and promoted. Driven by events,
    not timing: the writes start once every reader has been answered, and the readers stop
    once each has been answered by the new version; every reader must have been answered
    while the ingest ran, and no answer may be an error or a short list."""
    url, home = server["url"], server["home"]
    (home / "catalogs").mkdir()
    catalog = shutil.copy(FIXTURES / "catalog.csv", home / "catalogs" / "catalog.csv")
    text = Path(catalog).read_text(encoding="utf-8").replace(" dress,", " dress (new),")
    Path(catalog).write_text(text, encoding="utf-8")  # changed titles: real re-encoding
    n_readers = 2
    ready = [threading.Event() for _ in range(n_readers)]
    switched = threading.Event()
    on_new = [threading.Event() for _ in range(n_readers)]
    answered: list[list[float]] = [[] for _ in range(n_readers)]
    failures: list[str] = []
    version_box: list[str] = []

    def reader(n: int) -> None:
        paths = [f"/items/P{i:04d}/similar?k={K}" for i in range(1 + n, 301, 37)]
        paths += [f"/users/U{i:03d}/feed?k={K}" for i in range(1 + n, 101, 13)]
        while not on_new[n].is_set():
            for path in paths:
                try:
                    status, body = get(url + path)
                except OSError as exc:  # a dropped connection is a failure too
                    failures.append(f"{path}: {exc}")
                    continue
                if status != 200 or len(body.get("items", [])) != K:
                    failures.append(f"{path}: {status} {str(body)[:200]}")
                answered[n].append(time.monotonic())
                ready[n].set()
            if switched.is_set() and get(f"{url}/info")[1]["served_version"] == version_box[0]:
                on_new[n].set()  # a full round was answered after the switch was seen

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(n_readers)]
    for thread in threads:
        thread.start()
    try:
        assert all(event.wait(120) for event in ready), failures[:5]
        started = time.monotonic()
        ingest = subprocess.run([server["semrec"], "--home", str(home), "ingest", catalog,
                                 "--json"], env=server["env"], capture_output=True, text=True,
                                timeout=600)
        ended = time.monotonic()
        assert ingest.returncode == 0, ingest.stderr
        assert "sending this ingest there" in ingest.stderr
        summary = json.loads(ingest.stdout)
        assert summary["updated"] >= 30 and summary["added"] == 0 and summary["rejected"] == 0
        jsonl = shutil.copy(FIXTURES / "new_products.jsonl", home / "catalogs")
        new = subprocess.run([server["semrec"], "--home", str(home), "ingest", jsonl],
                             env=server["env"],
                             capture_output=True, text=True, timeout=600)
        assert new.returncode == 0, new.stderr
        version_box.append(_reindex_beside(home))
        switched.set()
        assert all(event.wait(120) for event in on_new), failures[:5]
    finally:
        for event in on_new:
            event.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:5]
    assert all(any(started <= t <= ended for t in times) for times in answered)
    info = get(f"{url}/info")[1]
    assert info["served_version"] == version_box[0] and info["products"] == 303
    similar = subprocess.run([server["semrec"], "--home", str(home), "similar", "N001",
                              "--json"], env=server["env"], capture_output=True, text=True)
    assert similar.returncode == 0 and len(json.loads(similar.stdout)) == 10
    by = {by: subprocess.run([server["semrec"], "--home", str(home), "similar", "N001", "--by",
                              by, "--json"], env=server["env"], capture_output=True, text=True)
          for by in ("text", "image")}  # --by through the live server (images are off here)
    assert by["text"].returncode == 0 and len(json.loads(by["text"].stdout)) == 10
    assert by["image"].returncode == 1 and "answered 404" in by["image"].stderr
    assert "'N001' has no image" in by["image"].stderr


def _reindex_beside(home: Path) -> str:
    """What ``semrec train`` does after training: a new version's index built beside the
    served one (its own shard), then handed to the running server."""
    settings = load_settings(home=home)
    with Workspace(settings, role="reindex", own_index=False) as ws:
        served = ws.served_version()
        config = ItemTowerConfig(**{**ws.items(served).tower.config.to_dict(), "seed": 7})
        new = ws.models.save(ItemTower(config), kind="init", encoders=ws.manifest(served).encoders)
        assert build_version(ws, new.version) == ws.products.count()
    assert serve_version(settings, new.version) == "handed to the running server"
    return new.version
