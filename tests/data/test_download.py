"""Downloads against a real HTTP server on 127.0.0.1 (no internet), and safe zip extraction."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmrec.config import get_settings
from llmrec.data.download import KNOWN_DOWNLOADS, extract_zip, fetch, fetch_known, sha256_file
from llmrec.errors import DataValidationError, DownloadError


@dataclass
class LocalServer:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    # urllib honours *_proxy variables; make sure requests to 127.0.0.1 go straight to the test server.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    files: dict[str, bytes] = {}
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            if self.path == "/slow":
                time.sleep(1.5)
            if self.path == "/short":  # promises more bytes than it sends, then hangs up
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"x" * 10)
                self.close_connection = True
                return
            body = files.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # the client gave up on purpose (timeout tests); keep the test output clean

    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield LocalServer(url=f"http://127.0.0.1:{httpd.server_address[1]}", files=files, hits=hits)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _payload(size: int = 300_000) -> bytes:
    # Deterministic, several read chunks long, not compressible to nothing.
    return b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(size // 32))


def test_fetch_downloads_verifies_and_then_uses_the_cache(server: LocalServer, tmp_path: Path) -> None:
    body = _payload()
    digest = hashlib.sha256(body).hexdigest()
    server.files["/data/ratings.zip"] = body

    path = fetch(f"{server.url}/data/ratings.zip", digest, cache_dir=tmp_path)
    assert path == tmp_path / "ratings.zip"
    assert path.read_bytes() == body
    assert server.hits == ["/data/ratings.zip"]

    again = fetch(f"{server.url}/data/ratings.zip", digest.upper(), cache_dir=tmp_path)
    assert again == path
    assert server.hits == ["/data/ratings.zip"], "a verified cached file must not be downloaded again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ratings.zip"], "no temporary files may be left"


def test_fetch_with_progress_bar_and_custom_filename(server: LocalServer, tmp_path: Path) -> None:
    body = _payload(100_000)
    server.files["/get?id=7"] = body
    path = fetch(
        f"{server.url}/get?id=7",
        hashlib.sha256(body).hexdigest(),
        cache_dir=tmp_path / "new" / "cache",
        filename="seven.bin",
        show_progress=True,
    )
    assert path == tmp_path / "new" / "cache" / "seven.bin"
    assert sha256_file(path) == hashlib.sha256(body).hexdigest()


def test_fetch_uses_the_configured_cache_dir(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b"hello"
    server.files["/hello.txt"] = body
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    try:
        path = fetch(f"{server.url}/hello.txt", hashlib.sha256(body).hexdigest())
    finally:
        get_settings.cache_clear()
    assert path == tmp_path / "cache" / "downloads" / "hello.txt"


def test_checksum_mismatch_raises_and_leaves_no_file(server: LocalServer, tmp_path: Path) -> None:
    body = _payload(50_000)
    server.files["/movies.zip"] = body
    wrong = "0" * 64
    url = f"{server.url}/movies.zip"
    with pytest.raises(DownloadError) as err:
        fetch(url, wrong, cache_dir=tmp_path)
    message = str(err.value)
    assert url in message
    assert wrong in message
    assert hashlib.sha256(body).hexdigest() in message
    assert list(tmp_path.iterdir()) == []


def test_stale_cached_file_is_downloaded_again(server: LocalServer, tmp_path: Path) -> None:
    body = b"fresh content"
    server.files["/f.csv"] = body
    (tmp_path / "f.csv").write_bytes(b"corrupt")
    path = fetch(f"{server.url}/f.csv", hashlib.sha256(body).hexdigest(), cache_dir=tmp_path)
    assert path.read_bytes() == body
    assert server.hits == ["/f.csv"]


def test_unreachable_server_raises_download_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as sock:  # a port that was free a moment ago and now has nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ml-latest-small.zip"
    with pytest.raises(DownloadError) as err:
        fetch(url, "a" * 64, cache_dir=tmp_path, timeout=5)
    assert url in str(err.value)
    assert "by hand" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_http_error_raises_download_error(server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{server.url}/missing.zip", "a" * 64, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_raises_download_error(server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError):
        fetch(f"{server.url}/short", "a" * 64, cache_dir=tmp_path, filename="short.bin")
    assert list(tmp_path.iterdir()) == []


def test_timeout_raises_download_error(server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError):
        fetch(f"{server.url}/slow", "a" * 64, cache_dir=tmp_path, filename="slow.bin", timeout=0.3)
    assert list(tmp_path.iterdir()) == []


def test_malformed_digest_or_filename_is_refused_before_any_request(server: LocalServer, tmp_path: Path) -> None:
    server.files["/a.bin"] = b"a"
    with pytest.raises(DownloadError, match="not a sha256 digest"):
        fetch(f"{server.url}/a.bin", "abc", cache_dir=tmp_path)
    with pytest.raises(DownloadError, match="plain file name"):
        fetch(f"{server.url}/a.bin", hashlib.sha256(b"a").hexdigest(), cache_dir=tmp_path, filename="../a.bin")
    assert server.hits == []


def test_known_downloads_pin_the_official_movielens_zip() -> None:
    url, digest = KNOWN_DOWNLOADS["movielens-latest-small"]
    assert url == "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
    assert digest == "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"
    with pytest.raises(DownloadError, match="unknown download"):
        fetch_known("no-such-dataset")


# -- extract_zip ---------------------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_zip_extracts_a_normal_archive(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "ok.zip", {"ml/ratings.csv": b"a,b\n1,2\n", "ml/README.txt": b"hi"})
    dest = extract_zip(archive, tmp_path / "out")
    assert dest == tmp_path / "out"
    assert (dest / "ml" / "ratings.csv").read_bytes() == b"a,b\n1,2\n"
    assert (dest / "ml" / "README.txt").read_bytes() == b"hi"


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "/tmp/llmrec-evil.txt", "..\\evil.txt"])
def test_extract_zip_rejects_path_traversal(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "bad.zip", {"fine.txt": b"ok", name: b"pwned"})
    dest = tmp_path / "sub" / "out"
    with pytest.raises(DataValidationError) as err:
        extract_zip(archive, dest)
    problem = err.value.first
    assert problem.source == str(archive)
    assert problem.field == name
    assert not dest.exists(), "nothing may be extracted from an unsafe archive"
    assert not (tmp_path / "sub" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_extract_zip_rejects_symlinks(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16) | 0
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataValidationError, match="symbolic link"):
        extract_zip(archive, tmp_path / "out")


def test_extract_zip_rejects_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    bogus = tmp_path / "x.zip"
    bogus.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataValidationError, match="not a readable zip"):
        extract_zip(bogus, tmp_path / "out")
