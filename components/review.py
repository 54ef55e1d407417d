"""The labelling page: `captcha-ocr review DIR` shows a review queue's captchas one at a time.

The standard library's http.server is enough for one person on 127.0.0.1: three JSON/bytes
routes and one page, with no dependency to install or keep up to date, and nothing fetched
from the internet (the page's CSS and script are inline, so it works offline). Every answer
goes straight to DIR/labels.csv through `review_queue.answer` (an atomic replace), so
closing the browser or stopping the server loses nothing; the page itself keeps no state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import mimetypes
import posixpath
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import tensorflow as tf

from components import review_queue
from components.settings import setting

HOST = "127.0.0.1"  # one person's browser on this machine; never another host
DEFAULT_PORT = 8765

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ReviewConfig:
    review_dir: str
    port: int = setting(DEFAULT_PORT, "port on 127.0.0.1 (0 picks a free one)")


class ReviewServer(ThreadingHTTPServer):
    """An HTTP server bound to one review folder; answers are written one at a time."""

    daemon_threads = True

    def __init__(self, config: ReviewConfig) -> None:
        self.review_dir = config.review_dir
        self.labels_csv = review_queue.labels_path(config.review_dir)
        self.write_lock = threading.Lock()
        if not tf.io.gfile.exists(self.labels_csv):
            raise FileNotFoundError(
                f"{self.labels_csv} not found: make a queue with "
                f"`captcha-ocr predict --model EXPORT FILES --review-dir "
                f"{config.review_dir}`"
            )
        rows = review_queue.read_rows(self.labels_csv)  # refuse a broken file before serving
        review_queue.check_files(self.labels_csv, rows)
        super().__init__((HOST, config.port), ReviewHandler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"


class ReviewHandler(BaseHTTPRequestHandler):
    server: ReviewServer

    def log_message(self, format: str, *args) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _foreign(self) -> bool:
        """A request another site made the browser send (DNS rebinding, a cross-site form)."""
        port = self.server.server_address[1]
        hosts = {f"{HOST}:{port}", f"localhost:{port}"}
        if self.headers.get("Host") not in hosts:
            return True
        return self.command == "POST" and self.headers.get_content_type() != "application/json"

    def do_GET(self) -> None:
        if self._foreign():
            self._send_json(403, {"error": "only this machine's browser, on this page"})
            return
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/":
            self._send(200, PAGE.encode("utf-8"), "text/html; charset=utf-8")
        elif url.path == "/api/rows":
            self._send_rows(review_queue.read_rows(self.server.labels_csv))
        elif url.path == "/image":
            self._send_image(urllib.parse.parse_qs(url.query).get("name", [""])[0])
        else:
            self._send_json(404, {"error": f"no page {url.path}"})

    def do_POST(self) -> None:
        if self._foreign():
            self._send_json(403, {"error": "only this machine's browser, on this page"})
            return
        if urllib.parse.urlsplit(self.path).path != "/api/answer":
            self._send_json(404, {"error": f"no page {self.path}"})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with self.server.write_lock:
                rows = review_queue.answer(
                    self.server.labels_csv,
                    str(body["filename"]),
                    str(body.get("label", "")),
                    str(body["status"]),
                )
        except (review_queue.ReviewCsvError, KeyError, ValueError) as error:
            self._send_json(400, {"error": str(error)})
            return
        self._send_rows(rows)

    def _send_rows(self, rows: list[review_queue.ReviewRow]) -> None:
        self._send_json(
            200, {"folder": self.server.review_dir, "rows": [row.to_dict() for row in rows]}
        )

    def _send_image(self, name: str) -> None:
        listed = {row.filename for row in review_queue.read_rows(self.server.labels_csv)}
        if name not in listed:  # only queued files: no path from the URL reaches the disk
            self._send_json(404, {"error": f"{name!r} is not in the queue"})
            return
        with tf.io.gfile.GFile(posixpath.join(self.server.review_dir, name), "rb") as f:
            data = f.read()
        self._send(200, data, mimetypes.guess_type(name)[0] or "application/octet-stream")

    def _send_json(self, status: int, value: dict) -> None:
        self._send(status, json.dumps(value).encode("utf-8"), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def serve_review(config: ReviewConfig) -> None:
    """Serve the page until Ctrl+C; every answer is already on disk when it stops."""
    server = ReviewServer(config)
    rows = review_queue.read_rows(server.labels_csv)
    answered = sum(row.status in review_queue.ANSWERED for row in rows)
    print(f"{answered} of {len(rows)} answered in {server.labels_csv}")
    print(f"label them at {server.url} (Ctrl+C stops; answers are saved as you go)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>captcha-ocr review</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; background: #f4f4f2; color: #222; }
main { max-width: 860px; margin: 0 auto; padding: 24px; text-align: center; }
header { display: flex; justify-content: space-between; align-items: baseline; }
#progress { font-size: 1.4em; font-weight: 600; }
#answered, #folder, #hint { color: #666; }
#captcha { display: block; margin: 20px auto 12px; width: 100%; max-width: 640px;
  image-rendering: pixelated; background: #fff; border: 1px solid #ccc; }
#guess { color: #555; min-height: 1.4em; }
#label { font: 2.4em ui-monospace, monospace; width: 12em; text-align: center;
  padding: 6px; margin: 12px; border: 2px solid #888; border-radius: 6px; }
#label:focus { outline: none; border-color: #1a5fb4; }
button { font-size: 1em; padding: 8px 14px; margin: 4px; border-radius: 6px;
  border: 1px solid #888; background: #fff; cursor: pointer; }
#status { min-height: 1.4em; margin-top: 8px; }
.labelled { color: #26a269; } .unreadable { color: #c01c28; } .error { color: #c01c28; }
</style></head>
<body><main>
<header><span id="progress">loading ...</span><span id="answered"></span></header>
<div id="folder"></div>
<img id="captcha" alt="captcha to label">
<div id="guess"></div>
<input id="label" autocomplete="off" spellcheck="false" aria-label="label">
<div>
  <button id="save" type="button">Save (Enter)</button>
  <button id="unreadable" type="button">Unreadable (Esc)</button>
  <button id="previous" type="button">Previous (&uarr;)</button>
  <button id="next" type="button">Next (&darr;)</button>
</div>
<div id="status"></div>
<p id="hint">Type the text you see: Enter saves it and shows the next captcha, Esc marks it
unreadable, &uarr; and &darr; go back and forth. Every answer is saved at once.</p>
</main>
<script>
"use strict";
let rows = [], current = 0, folder = "";
const $ = (id) => document.getElementById(id);
const answered = (row) => row.status === "labelled" || row.status === "unreadable";

function firstOpen(from) {
  for (let i = from; i < rows.length; i++) if (!answered(rows[i])) return i;
  for (let i = 0; i < from; i++) if (!answered(rows[i])) return i;
  return -1;
}

function show(index) {
  if (!rows.length) { $("progress").textContent = "the queue is empty"; return; }
  current = Math.max(0, Math.min(index, rows.length - 1));
  const row = rows[current];
  $("progress").textContent = `${current + 1} of ${rows.length}`;
  const done = rows.filter(answered).length;
  $("answered").textContent = `${done} answered`;
  $("captcha").src = "/image?name=" + encodeURIComponent(row.filename);
  $("guess").textContent = row.status === "failed_to_decode"
    ? "the model could not decode this file"
    : `model read "${row.prediction}" (confidence ${row.confidence.toFixed(2)})`;
  $("label").value = row.label;
  $("status").className = answered(row) ? row.status : "";
  $("status").textContent = answered(row) ? `${row.filename}: ${row.status}` : row.filename;
  $("label").focus();
  $("label").select();
}

async function send(status) {
  const row = rows[current];
  const response = await fetch("/api/answer", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({filename: row.filename, label: $("label").value, status})});
  const reply = await response.json();
  if (!response.ok) {
    $("status").className = "error"; $("status").textContent = reply.error; return;
  }
  rows = reply.rows;
  const next = firstOpen(current + 1);
  if (next < 0) {
    show(current);
    $("status").className = "labelled";
    $("status").textContent = `all ${rows.length} answered: captcha-ocr retrain --images ` +
      `${folder} --labels ${folder}/labels.csv`;
  } else {
    show(next);
  }
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Enter") { event.preventDefault(); send("labelled"); }
  else if (event.key === "Escape") { event.preventDefault(); send("unreadable"); }
  else if (event.key === "ArrowUp") { event.preventDefault(); show(current - 1); }
  else if (event.key === "ArrowDown") { event.preventDefault(); show(current + 1); }
});
$("save").onclick = () => send("labelled");
$("unreadable").onclick = () => send("unreadable");
$("previous").onclick = () => show(current - 1);
$("next").onclick = () => show(current + 1);

fetch("/api/rows").then((r) => r.json()).then((reply) => {
  rows = reply.rows; folder = reply.folder;
  $("folder").textContent = folder;
  const open = firstOpen(0);
  show(open < 0 ? rows.length - 1 : open);
});
</script>
</body></html>
"""
