"""`download` against a real HTTP server on 127.0.0.1 serving zips made here; nothing leaves."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import pathlib
import threading
import zipfile

import pytest
from PIL import Image

from components.download import DownloadConfig, DownloadError, download, manifest_path
from pipeline import cli

NUM_IMAGES = 6
LABELS = ["226md", "22d5n", "2356g", "x3deb", "bny23", "8n5p3"][:NUM_IMAGES]


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (20, 8), (seed * 40 % 256, 10, 200, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


GOOD_ENTRIES = {f"captcha_images_v2/{label}.png": png(i) for i, label in enumerate(LABELS)}
ROUTES = {
    "/good.zip": make_zip(
        {
            "captcha_images_v2/": b"",
            **GOOD_ENTRIES,
            "__MACOSX/captcha_images_v2/._226md.png": b"junk",
        }
    ),
    "/traversal.zip": make_zip({**GOOD_ENTRIES, "../evil.png": png(9)}),
    "/absolute.zip": make_zip({**GOOD_ENTRIES, "/tmp/evil.png": png(9)}),
    "/broken-image.zip": make_zip({**GOOD_ENTRIES, "captcha_images_v2/abcde.png": b"\x89PNG"}),
    "/long-label.zip": make_zip({**GOOD_ENTRIES, "captcha_images_v2/abcdef.png": png(7)}),
    "/not-a-zip": b"<html>rate limited</html>",
}
TRUNCATED = "/truncated.zip"  # announces the full length of good.zip, sends half, hangs up


class Handler(http.server.BaseHTTPRequestHandler):
    requests_seen: list[str] = []

    def do_GET(self):
        Handler.requests_seen.append(self.path)
        body = ROUTES["/good.zip"] if self.path == TRUNCATED else ROUTES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path == TRUNCATED else body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def config(server: str, route: str, tmp_path, **kwargs) -> DownloadConfig:
    return DownloadConfig(
        url=server + route,
        dest=str(tmp_path / "data" / "captcha_images_v2"),
        expected_count=NUM_IMAGES,
        timeout_seconds=10,
        **kwargs,
    )


def test_download_verifies_extracts_and_is_idempotent(server, tmp_path):
    first = download(config(server, "/good.zip", tmp_path), show_progress=False)
    dest = tmp_path / "data" / "captcha_images_v2"
    assert first.downloaded and first.num_images == NUM_IMAGES
    assert first.sha256 == hashlib.sha256(ROUTES["/good.zip"]).hexdigest()
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{label}.png" for label in LABELS)
    assert (dest / "226md.png").read_bytes() == GOOD_ENTRIES["captcha_images_v2/226md.png"]
    manifest = json.loads(pathlib.Path(manifest_path(str(dest))).read_text())
    assert manifest["sha256"] == first.sha256 and manifest["url"] == server + "/good.zip"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "captcha_images_v2",
        "captcha_images_v2.download.json",
    ]

    seen = len(Handler.requests_seen)
    second = download(config(server, "/good.zip", tmp_path), show_progress=False)
    assert len(Handler.requests_seen) == seen, "a second call must not download again"
    assert not second.downloaded and second.sha256 == first.sha256


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (TRUNCATED, "download of|truncated"),
        ("/traversal.zip", "path traversal"),
        ("/absolute.zip", "path traversal"),
        ("/not-a-zip", "not a complete zip"),
        ("/broken-image.zip", "does not decode"),
        ("/long-label.zip", "5-character label"),
        ("/missing.zip", "404"),
    ],
)
def test_bad_downloads_fail_and_leave_nothing(server, tmp_path, route, message):
    with pytest.raises(DownloadError, match=message):
        download(config(server, route, tmp_path), show_progress=False)
    assert list((tmp_path / "data").iterdir()) == []
    assert not (tmp_path / "evil.png").exists()


def test_wrong_count_and_pinned_digest_are_refused(server, tmp_path):
    with pytest.raises(DownloadError, match=f"expected {NUM_IMAGES + 1} PNG files"):
        download(
            DownloadConfig(
                url=server + "/good.zip", dest=str(tmp_path / "a"), expected_count=NUM_IMAGES + 1
            ),
            show_progress=False,
        )
    with pytest.raises(DownloadError, match="SHA-256"):
        download(
            config(server, "/good.zip", tmp_path, expected_sha256="0" * 64), show_progress=False
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_cli_download_prints_the_digest(server, tmp_path, capsys):
    args = [
        "download",
        "--url",
        server + "/good.zip",
        "--dest",
        str(tmp_path / "d"),
        "--expected-count",
        str(NUM_IMAGES),
    ]
    assert cli.main(args) == 0
    digest = hashlib.sha256(ROUTES["/good.zip"]).hexdigest()
    assert digest in capsys.readouterr().out
    assert cli.main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
