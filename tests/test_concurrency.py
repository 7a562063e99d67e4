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
from semrec.index.builder import IndexBuilder
from semrec.serving.context import Semrec
from semrec.towers import ItemTower, ItemTowerConfig, VersionItems
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
    with Semrec(load_settings(home=home), role="test") as sr:
        sr.builder(image_source()).ingest(read_catalog(FIXTURES / "catalog.csv").items)
        sr.events.add(read_events(FIXTURES / "events.csv").items)
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
    url, home = server["url"], server["home"]
    (home / "catalogs").mkdir()
    catalog = shutil.copy(FIXTURES / "catalog.csv", home / "catalogs" / "catalog.csv")
    text = Path(catalog).read_text(encoding="utf-8").replace(" dress,", " dress (new),")
    Path(catalog).write_text(text, encoding="utf-8")  # changed titles: real re-encoding
    stop = threading.Event()
    answered: list[int] = []
    failures: list[str] = []

    def reader(n: int) -> None:
        paths = [f"/items/P{i:04d}/similar?k={K}" for i in range(1 + n, 301, 37)]
        paths += [f"/users/U{i:03d}/feed?k={K}" for i in range(1 + n, 101, 13)]
        while not stop.is_set():
            for path in paths:
                try:
                    status, body = get(url + path)
                except OSError as exc:  # a dropped connection is a failure too
                    failures.append(f"{path}: {exc}")
                    continue
                if status != 200 or len(body.get("items", [])) != K:
                    failures.append(f"{path}: {status} {str(body)[:200]}")
                answered.append(status)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        ingest = subprocess.run([server["semrec"], "--home", str(home), "ingest", catalog,
                                 "--json"], env=server["env"], capture_output=True, text=True,
                                timeout=600)
        assert ingest.returncode == 0, ingest.stderr
        assert "sending this ingest there" in ingest.stderr
        summary = json.loads(ingest.stdout)
        assert summary["updated"] >= 30 and summary["added"] == 0 and summary["rejected"] == 0
        jsonl = shutil.copy(FIXTURES / "new_products.jsonl", home / "catalogs")
        new = subprocess.run([server["semrec"], "--home", str(home), "ingest", jsonl],
                             env=server["env"],
                             capture_output=True, text=True, timeout=600)
        assert new.returncode == 0, new.stderr
        version = _reindex_beside(home)
        deadline = time.time() + 60
        while get(f"{url}/info")[1]["served_version"] != version and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # some queries on the new version too
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    print(f"\nqueries answered during writes: {len(answered)}, failed: {len(failures)}")
    assert not failures, failures[:5]
    assert len(answered) > 50
    info = get(f"{url}/info")[1]
    assert info["served_version"] == version and info["products"] == 303
    similar = subprocess.run([server["semrec"], "--home", str(home), "similar", "N001",
                              "--json"], env=server["env"], capture_output=True, text=True)
    assert similar.returncode == 0 and len(json.loads(similar.stdout)) == 10


def _reindex_beside(home: Path) -> str:
    """What ``semrec train`` does after training: a new version's index built beside the
    served one (its own shard), then ``models/CURRENT`` promoted."""
    with Semrec(load_settings(home=home), role="reindex", own_index=False) as sr:
        tower, manifest = sr.current_model()
        config = ItemTowerConfig(**{**tower.config.to_dict(), "seed": 7})
        new = sr.models.save(ItemTower(config), kind="init", encoders=manifest.encoders)
        store = sr.open_store(new.version, config.dim)
        builder = IndexBuilder(sr.conn, store, VersionItems(new.version, ItemTower(config)),
                               text_encoder=sr.text_encoder, image_encoder=None,
                               encoder_ids=sr.encoder_ids(), images=image_source())
        builder.reindex_rows(list(sr.products.all()))
        assert store.count() == sr.products.count()
        store.close()
        sr.models.promote(new.version)
    return new.version
