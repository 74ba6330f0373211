"""Downloads against a local HTTP server on 127.0.0.1 serving real PTB-XL sample files."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ecgx.datasets.download import DownloadError, download
from ecgx.errors import EcgxError
from tests.conftest import PTBXL_SAMPLES, needs_samples


class Publisher:
    """Serves {path: bytes} under /ptb-xl/1.0.3/ with Range support; records the requests."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        sums = "".join(f"{hashlib.sha256(b).hexdigest()} {p}\n" for p, b in sorted(files.items()))
        self.files["SHA256SUMS.txt"] = sums.encode()
        self.requests: list[tuple[str, str | None]] = []
        publisher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                rng = self.headers.get("Range")
                publisher.requests.append((self.path, rng))
                path = self.path.removeprefix("/ptb-xl/1.0.3/")
                if path not in publisher.files:
                    self.send_error(404)
                    return
                body = publisher.files[path]
                start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def publisher() -> Publisher:
    names = ["ptbxl_database.csv", "scp_statements.csv"]
    for rid in ("00001", "00002", "00003"):
        names += [f"records100/00000/{rid}_lr.hea", f"records100/00000/{rid}_lr.dat"]
    server = Publisher({n: (PTBXL_SAMPLES / n).read_bytes() for n in names})
    yield server
    server.server.shutdown()


@needs_samples(PTBXL_SAMPLES)
def test_download_verifies_and_is_idempotent(publisher: Publisher, tmp_path: Path) -> None:
    report = download("ptbxl", tmp_path, base_url=publisher.url, jobs=2)
    assert len(report.fetched) == 8 and not report.verified
    for name in ("ptbxl_database.csv", "records100/00000/00002_lr.dat"):
        assert (tmp_path / "ptb-xl" / name).read_bytes() == (PTBXL_SAMPLES / name).read_bytes()
    again = download("ptbxl", tmp_path, base_url=publisher.url)
    assert len(again.verified) == 8 and not again.fetched


@needs_samples(PTBXL_SAMPLES)
def test_download_resumes_a_partial_file(publisher: Publisher, tmp_path: Path) -> None:
    name = "records100/00000/00003_lr.dat"
    whole = (PTBXL_SAMPLES / name).read_bytes()
    part = tmp_path / "ptb-xl" / (name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(whole[:5000])
    download("ptbxl", tmp_path, base_url=publisher.url)
    assert (tmp_path / "ptb-xl" / name).read_bytes() == whole
    assert (f"/ptb-xl/1.0.3/{name}", "bytes=5000-") in publisher.requests
    assert not part.exists()


@needs_samples(PTBXL_SAMPLES)
def test_corrupt_download_is_an_error_naming_the_file(publisher: Publisher, tmp_path) -> None:
    publisher.files["records100/00000/00002_lr.dat"] = b"not the published bytes"
    with pytest.raises(DownloadError, match="00002_lr.dat"):
        download("ptbxl", tmp_path, base_url=publisher.url)
    assert not (tmp_path / "ptb-xl" / "records100/00000/00002_lr.dat").exists()


def test_unreachable_server_and_manual_datasets(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="SHA256SUMS.txt"):
        download("ptbxl", tmp_path, base_url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(EcgxError, match="figshare"):
        download("chapman", tmp_path)
    with pytest.raises(EcgxError, match="unknown dataset"):
        download("mnist", tmp_path)
