"""A real ``semrec serve`` on a free loopback port and a headless Chromium driven by
selenium, shared by the storefront's browser tests, its benchmark and its screenshots.

Chromium and its driver come from Debian (``apt-get install chromium chromium-driver``);
nothing is downloaded at run time. Readiness is ``/health`` answering, polled.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SEMREC = [sys.executable, "-c", "from semrec.cli import app; app()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """Poll ``url/health`` until it answers 200; raise if the server exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"semrec serve exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"semrec serve did not answer {url}/health within {timeout_s:g} s")


@contextmanager
def serve(home: Path, env: Mapping[str, str] | None = None,
          warm: bool = True) -> Iterator[str]:
    """``semrec --home HOME serve`` on a free loopback port; yields its base URL."""
    port = free_port()
    command = [*SEMREC, "--home", str(home), "serve", "--port", str(port)]
    server = subprocess.Popen(command + ([] if warm else ["--no-warm"]),
                              env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def chromium_available() -> bool:
    return bool(_binary() and shutil.which("chromedriver"))


def _binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium (selenium WebDriver) that records the browser console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary() or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--disable-extensions",
                 "--no-first-run", "--disable-background-networking"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
