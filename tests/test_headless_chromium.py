"""The browser check itself catches what it is for: errors, undecodable pictures, network use."""

from __future__ import annotations

import base64
import io

import headless_chromium
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def browser() -> str:
    return headless_chromium.browser_or_skip()


def test_a_broken_page_is_reported(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><body><p>shown</p>"
        "<img alt='truncated' src='data:image/png;base64,iVBORw0KGgo='>"
        "<img alt='online' src='https://example.com/picture.png'>"
        "<script>console.error('boom'); missing_function();</script></body></html>"
    )
    report = headless_chromium.open_page(browser, str(page))
    assert report.text == "shown"
    assert [image[0] for image in report.broken_images()] == ["truncated", "online"]
    joined = "\n".join(report.errors)
    for expected in ("console: boom", "missing_function", "network request: https://example.com"):
        assert expected in joined, report.errors


def test_a_good_page_passes(browser, tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (3, 2), color=128).save(buffer, format="PNG")
    pixel = base64.b64encode(buffer.getvalue()).decode()
    page = tmp_path / "good.html"
    page.write_text(
        f"<html><body><p>fine</p><img alt='pixel' src='data:image/png;base64,{pixel}'>"
        "</body></html>"
    )
    report = headless_chromium.assert_renders_offline(browser, str(page), ("fine",))
    assert report.images == [["pixel", 3, 2, ""]]
