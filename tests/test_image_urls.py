"""Catalog images given as http(s) URLs: refused unless ``image.allow_urls``; then fetched
once each from a real HTTP server on loopback, bounded, and decoded like files."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ingest import ImageError, image_source, read_catalog
from ingest.images import fetch_image
from semrec.cli import app
from semrec.config import load_settings
from semrec.workspace import Workspace
from tests.conftest import FIXTURES, write_config

IMAGES = ["P0001.png", "P0002.png", "P0003.png"]
LARGE = 20_000_001  # one byte over the default image.max_download_bytes


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Counter[str]]]:
    """``fixtures/images/`` over HTTP; ``/large.png`` is over the size limit, ``/redirect``
    points at ``ftp://`` and anything missing is a 404. Counts GETs by path."""
    hits: Counter[str] = Counter()

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(FIXTURES / "images"), **kwargs)

        def do_GET(self) -> None:
            hits[self.path] += 1
            if self.path == "/large.png":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()  # no Content-Length: the reader must stop on its own
                try:
                    for _ in range(LARGE // (1 << 20) + 1):
                        self.wfile.write(b"\0" * (1 << 20))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the reader hung up at its limit, as it should
                return
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "ftp://127.0.0.1/a.png")  # urllib alone follows
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
            pass  # a traceback printed here would land in the CLI's captured stderr

    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def write_catalog(folder: Path, images: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.jsonl"
    path.write_text("".join(json.dumps({"product_id": pid, "title": f"Product {pid}",
                                        "image": image}) + "\n"
                            for pid, image in images.items()))
    return path


def ingest(home: Path, catalog: Path) -> tuple[dict, str]:
    result = CliRunner().invoke(app, ["--home", str(home), "ingest", str(catalog), "--json"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), " ".join(result.stderr.split())  # unwrapped


def test_urls_cost_the_image_unless_enabled(tmp_path: Path, server) -> None:
    base, _ = server
    catalog = write_catalog(tmp_path, {f"U{i}": f"{base}/{name}"
                                       for i, name in enumerate(IMAGES)})
    result = read_catalog(catalog)
    assert [p.image for p in result.items] == [None] * len(IMAGES) and result.errors == []
    for line, warning in enumerate(result.warnings, start=1):
        assert (warning.line, warning.field) == (line, "image")
        assert "image.allow_urls" in str(warning) and "catalog.jsonl" in str(warning)

    summary, stderr = ingest(tmp_path / "home", catalog)  # the CLI's default: off
    assert (summary["rejected"], summary["products"]) == (0, len(IMAGES))
    assert summary["fields_left_out"] == len(IMAGES) and "image.allow_urls" in stderr


def test_enabled_urls_are_fetched_once_and_encoded(tmp_path: Path, tiny_clip: dict,
                                                   server) -> None:
    base, hits = server
    home = tmp_path / "home"
    write_config(home, {**tiny_clip, "allow_urls": True})
    urls = {f"U{i}": f"{base}/{name}?run=1" for i, name in enumerate(IMAGES)}
    catalog = write_catalog(tmp_path / "data", {**urls, "F1": "../../etc/passwd"})

    summary, stderr = ingest(home, catalog)
    assert summary["fields_left_out"] == 1 and "outside the allowed image folders" in stderr
    assert (summary["added"], summary["images_encoded"], summary["image_errors"]) == (4, 3, 0)
    assert all(hits[url.removeprefix(base)] == 1 for url in urls.values()), hits

    with Workspace(load_settings(home=home)) as ws:
        rows = {row.product_id: row for row in ws.products.all() if row.product_id != "F1"}
        stored = {item.product_id: item.payload for item in ws.served_store().get(sorted(rows))}
    assert all(row.modalities == ("text", "image") for row in rows.values())
    assert {pid: payload["image"] for pid, payload in stored.items()} == urls
    assert all(payload["modalities"] == ["text", "image"] for payload in stored.values())


def test_repair_keeps_url_images(tmp_path: Path, tiny_clip: dict, server) -> None:
    """``verify --repair`` rebuilds a product whose image feature is corrupt from its stored
    row: an image URL stays the URL (it once became the path ``https:/h/x``), is fetched
    again and encoded."""
    base, hits = server
    home = tmp_path / "home"
    write_config(home, {**tiny_clip, "allow_urls": True})
    url = f"{base}/{IMAGES[0]}?run=3"
    ingest(home, write_catalog(tmp_path / "data", {"U0": url}))
    with Workspace(load_settings(home=home)) as ws, ws.conn:  # a corrupt image feature
        ws.conn.execute("UPDATE features SET vector = x'00' WHERE key = ?",
                        (ws.products.get("U0").image_key,))
    result = CliRunner().invoke(app, ["--home", str(home), "verify", "--repair", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["differences"] == {"corrupt_feature": 1} and report["remaining"] == 0
    with Workspace(load_settings(home=home)) as ws:
        row = ws.products.get("U0")
        payload = ws.served_store().get(["U0"])[0].payload
    assert row.image_path == url and payload["image"] == url
    assert row.modalities == ("text", "image") and hits[url.removeprefix(base)] == 2


def test_failed_downloads_leave_the_product_text_only(tmp_path: Path, tiny_clip: dict,
                                                      server) -> None:
    base, _ = server
    home = tmp_path / "home"
    write_config(home, {**tiny_clip, "allow_urls": True})
    catalog = write_catalog(tmp_path / "data", {
        "OK": f"{base}/{IMAGES[0]}?run=2", "MISSING": f"{base}/missing.png",
        "LARGE": f"{base}/large.png", "REDIRECT": f"{base}/redirect",
        "FTP": "ftp://127.0.0.1/a.png"})

    summary, stderr = ingest(home, catalog)
    assert summary["fields_left_out"] == 1 and "only http:// and https://" in stderr  # ftp
    assert (summary["added"], summary["images_encoded"], summary["image_errors"]) == (5, 1, 3)
    assert "MISSING" in stderr and "HTTP 404" in stderr
    assert "LARGE" in stderr and "larger than 20000000 bytes" in stderr
    assert "REDIRECT" in stderr and "non-http(s)" in stderr
    assert "Traceback" not in stderr


def test_other_schemes_cost_the_image_even_when_enabled(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path, {"A": "ftp://example.com/a.png",
                                       "B": "file:///etc/passwd",
                                       "C": "HTTPS://example.com/c.png"})
    result = read_catalog(catalog, allow_urls=True)
    assert [p.image for p in result.items] == [None, None, "HTTPS://example.com/c.png"]
    assert [(w.line, w.field) for w in result.warnings] == [(1, "image"), (2, "image")]
    assert all("only http:// and https://" in str(w) for w in result.warnings)


def test_fetch_limits_and_source_without_urls(tmp_path: Path, server) -> None:
    base, _ = server
    data = fetch_image(f"{base}/{IMAGES[1]}")
    assert data == (FIXTURES / "images" / IMAGES[1]).read_bytes()
    with pytest.raises(ImageError, match="larger than 100 bytes"):
        fetch_image(f"{base}/{IMAGES[1]}", max_bytes=100)  # refused from Content-Length
    with pytest.raises(ImageError, match="HTTP 404"):
        fetch_image(f"{base}/nope.png")
    with pytest.raises(ImageError, match="cannot fetch"):
        fetch_image("http://127.0.0.1:1/a.png", timeout_s=2)  # nothing listens on port 1
    with pytest.raises(ImageError, match="only http"):
        fetch_image("file:///etc/passwd")

    small = image_source(max_pixels=10, allow_urls=True)  # pixel limit as for files
    url = f"{base}/{IMAGES[2]}"
    small.digest(url)
    with pytest.raises(ImageError, match="more than 10 pixels"):
        small.load(url)
