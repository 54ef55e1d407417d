"""The labelling page in a real browser: headless Chromium driven by Selenium, keyboard only."""

from __future__ import annotations

import pathlib
import shutil
import threading
import urllib.error
import urllib.request

import pytest
from test_review import read_csv, small_queue

from components import review_queue
from components.review import ReviewConfig, ReviewServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def server(tmp_path):
    labels = small_queue(
        tmp_path / "queue", [review_queue.QUEUED] * 4 + [review_queue.FAILED_TO_DECODE]
    )
    server = ReviewServer(ReviewConfig(str(labels.parent), port=0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "needs Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1000,700",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for_text(driver, element_id: str, text: str) -> None:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(
        expected_conditions.text_to_be_present_in_element(("id", element_id), text)
    )


def type_into_box(driver, *keys: str) -> None:
    driver.switch_to.active_element.send_keys(*keys)


def test_three_answers_survive_a_reload_and_are_in_labels_csv(server, browser):
    from selenium.webdriver.common.keys import Keys

    rows = review_queue.read_rows(server.labels_csv)
    browser.get(server.url)
    wait_for_text(browser, "progress", "1 of 5")
    assert browser.switch_to.active_element.get_attribute("id") == "label"
    assert browser.find_element("id", "label").get_attribute("value") == rows[0].label
    assert browser.execute_script("return document.getElementById('captcha').naturalWidth") > 0

    type_into_box(browser, Keys.BACKSPACE, "3210", Keys.ENTER)  # the guess is selected: replaced
    wait_for_text(browser, "progress", "2 of 5")
    type_into_box(browser, Keys.ENTER)  # the guess is right: accept it
    wait_for_text(browser, "progress", "3 of 5")
    type_into_box(browser, Keys.ESCAPE)  # cannot be read
    wait_for_text(browser, "progress", "4 of 5")
    wait_for_text(browser, "answered", "3 answered")

    browser.refresh()
    wait_for_text(browser, "progress", "4 of 5")  # opens at the first unanswered captcha
    wait_for_text(browser, "answered", "3 answered")
    seen = []
    for _ in range(3):
        type_into_box(browser, Keys.ARROW_UP)
        seen.append(
            (
                browser.find_element("id", "label").get_attribute("value"),
                browser.find_element("id", "status").text,
            )
        )
    assert seen == [
        (rows[2].label, f"{rows[2].filename}: unreadable"),
        (rows[1].label, f"{rows[1].filename}: labelled"),
        ("3210", f"{rows[0].filename}: labelled"),
    ]
    saved = read_csv(server.labels_csv)
    assert [(r["label"], r["status"]) for r in saved] == [
        ("3210", "labelled"),
        (rows[1].label, "labelled"),
        (rows[2].label, "unreadable"),
        (rows[3].label, "queued"),
        (rows[4].label, "failed_to_decode"),
    ]

    for _ in range(4):
        browser.find_element("id", "next").click()
    wait_for_text(browser, "guess", "could not decode")
    browser.find_element("id", "unreadable").click()
    wait_for_text(browser, "answered", "4 answered")
    assert read_csv(server.labels_csv)[4]["status"] == "unreadable"


def test_the_server_refuses_bad_answers_and_files_outside_the_queue(server):
    def post(body: bytes, content_type: str = "application/json") -> int:
        request = urllib.request.Request(
            server.url + "api/answer",
            data=body,
            method="POST",
            headers={"Content-Type": content_type},
        )
        try:
            return urllib.request.urlopen(request).status
        except urllib.error.HTTPError as error:
            return error.code

    before = pathlib.Path(server.labels_csv).read_text()
    assert post(b'{"filename": "0.png", "label": "", "status": "labelled"}') == 400
    assert post(b'{"filename": "nope.png", "label": "1", "status": "labelled"}') == 400
    assert post(b'{"filename": "0.png", "label": "1", "status": "queued"}') == 400
    assert post(b"not json") == 400
    # A cross-site form can post text/plain without asking the server first: refused.
    assert post(b'{"filename": "0.png", "label": "1", "status": "labelled"}', "text/plain") == 403
    assert pathlib.Path(server.labels_csv).read_text() == before
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(server.url + "image?name=../queue/labels.csv")
    with pytest.raises(urllib.error.HTTPError, match="403"):  # a rebound DNS name
        urllib.request.urlopen(
            urllib.request.Request(server.url + "api/rows", headers={"Host": "evil.example"})
        )
    assert post(b'{"filename": "0.png", "label": "12", "status": "labelled"}') == 200
    assert read_csv(server.labels_csv)[0]["label"] == "12"
