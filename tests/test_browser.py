"""The HTML report in a real browser: headless Chromium renders the tiny audit's report.html, takes a
screenshot, and must log no console error and make no network request.

Needs Debian's ``chromium`` (``apt-get install chromium``); skipped when it is not installed.
Run just this test with ``python -m pytest -m browser``.
"""

import shutil
import socket
import subprocess
import threading

import pytest

pytestmark = pytest.mark.browser
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class _Recorder:
    """A proxy that answers every request with 502 and remembers it: any request the page makes to
    the network (http, https, fonts, CDNs) lands here, since file:// pages never use the proxy."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                line = conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
                self.requests.append(line)
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")


def _host(request_line: str) -> str:
    target = request_line.split()[1] if len(request_line.split()) > 1 else request_line
    return target.split("//")[-1].split("/")[0].split(":")[0]


def _open(page, tmp_path, name):
    """Load ``page`` in headless Chromium behind the recording proxy; returns (stderr, hosts, screenshot)."""
    proxy = _Recorder()
    shot = tmp_path / f"{name}.png"
    cmd = [BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
           "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / name}",
           "--window-size=1200,4000", f"--screenshot={shot}", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    proxy.sock.close()
    return done.stderr, {_host(r) for r in proxy.requests}, shot


@pytest.mark.skipif(BROWSER is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium_offline(audited, tmp_path):
    # Chromium itself calls home (accounts.google.com, www.google.com) whatever the page; a blank page
    # measures that background traffic, and the report may add nothing to it.
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html lang=en><title>blank</title><p>blank</p></html>")
    _, background, _ = _open(blank, tmp_path, "blank")
    stderr, hosts, shot = _open(audited / "report.html", tmp_path, "report")
    assert shot.is_file() and shot.stat().st_size > 20_000, stderr[-2000:]
    console = [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    assert hosts - background == set(), hosts - background
