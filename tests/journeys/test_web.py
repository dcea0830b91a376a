"""Journey: the team through the local web page, in a real headless Chromium (issue 19).

Alice (laptop + desktop) and Bob share environments; Alice follows along in her browser on the
page her laptop's daemon serves. She signs in with the address `mocksync open` prints, which
works once; sees Bob's save appear on the environment's page without reloading it; resolves a
conflict with one click and both devices' files agree; invites Carol from the space page
(Carol joins with the token the page showed, and the page shows her) and removes her again.
Requests without the session, from another site's page (forged Origin) or under another host
name (DNS rebinding) are refused.

Real processes only: the relay, three daemons and the `mocksync` command (tests/journeys/
harness.py), the browser driven by Selenium through Debian's chromium-driver. Skipped, saying
why, where Chromium, its driver or Selenium is missing. With MOCKSYNC_SCREENSHOTS=1 the pages
are saved to docs/ui/*.png for the README (kept in the tree, not rewritten on every run).
"""

from __future__ import annotations

import contextlib
import copy
import html
import http.server
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Crew, Device, Team, wait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: A name the browser resolves to 127.0.0.1 (its own resolver rule): a DNS-rebinding attacker.
REBIND_HOST = "rebind.test"
#: Set to 1 to (re)write the README's screenshots of each page into docs/ui/.
SCREENSHOTS_ENV = "MOCKSYNC_SCREENSHOTS"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "ui"
#: Longest a page may take to show something the system does by itself.
PAGE_WAIT_S = 20.0

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install "
                               "-e '.[test]')")
if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
    pytest.skip(f"headless browser tests need {CHROMIUM} and {CHROMEDRIVER} (Debian packages "
                "chromium and chromium-driver; .ci/run installs them)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def web_crew() -> Iterator[Crew]:
    """Alice (laptop, desktop) and Bob in space `team`, each daemon's page on a free port."""
    team = Team()
    try:
        laptop, desktop, bob = team.crew(ui=True, ui_port=0)
        yield Crew(team, laptop, desktop, bob)
    finally:
        team.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium with a fresh profile, nothing reaching out (loopback only)."""
    profile = tempfile.mkdtemp(prefix="msj-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                 f"--host-resolver-rules=MAP {REBIND_HOST} 127.0.0.1",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# ------------------------------------------------------------------------------ helpers


def open_url(dev: Device) -> dict[str, Any]:
    """`mocksync open --no-browser --json` on `dev`: the sign-in address and the page's base."""
    return dev.ms("open", "--no-browser", "--json").json()


def sign_in(driver: Any, dev: Device) -> str:
    """Sign the browser in to `dev`'s page; the page's base URL."""
    doc = open_url(dev)
    assert doc["opened"] is False and doc["url"].startswith("http://127.0.0.1:")
    driver.get(doc["url"])
    wait(lambda: driver.current_url == doc["base"], "the sign-in to land on the overview")
    return doc["base"]


#: Tries at reading or clicking an element the live page may swap out meanwhile.
STALE_TRIES = 20


def text_of(driver: Any, css: str) -> str:
    """The text of the first element matching `css` ("" when none), read again when the
    live page swapped it out mid-read."""
    for _ in range(STALE_TRIES):
        try:
            found = driver.find_elements(By.CSS_SELECTOR, css)
            return found[0].text if found else ""
        except selenium.common.exceptions.StaleElementReferenceException:
            continue
    raise AssertionError(f"{css} kept being replaced while read")


def click(driver: Any, css: str) -> None:
    """Click the first element matching `css`, found again if the live page swapped it."""
    for _ in range(STALE_TRIES):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except selenium.common.exceptions.StaleElementReferenceException:
            continue
    raise AssertionError(f"{css} kept being replaced before it could be clicked")


def page_until(driver: Any, pred: Callable[[], Any], what: str) -> Any:
    """Wait (bounded) for the page to show something, reading the DOM as it is now."""
    def look() -> Any:
        try:
            return pred()
        except selenium.common.exceptions.WebDriverException:
            return None  # the DOM was swapped mid-read: look again
    return wait(look, f"the page to show {what}", PAGE_WAIT_S)


def screenshot(driver: Any, name: str) -> None:
    if os.environ.get(SCREENSHOTS_ENV) == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1280, "height": max(700, min(height, 2400)), "deviceScaleFactor": 1,
            "mobile": False})
        try:
            driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
        finally:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def route_endpoint(doc: dict[str, Any], route: str) -> str:
    return next(r for r in doc["routes"] if r["uuid"] == route)["endpoint"]


@contextlib.contextmanager
def evil_site(target: str) -> Iterator[str]:
    """Another site's page on this machine that posts a form to `target` as soon as it loads
    (a cross-site request forgery); its URL."""
    page = (f'<!doctype html><form method="post" action="{html.escape(target)}">'
            '<input name="csrf" value="guessed"></form>'
            "<script>document.forms[0].submit()</script>").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------ journeys


def test_the_page_needs_the_one_time_sign_in_and_refuses_forgeries(web_crew: Crew,
                                                                   browser: Any) -> None:
    laptop = web_crew.laptop
    doc = open_url(laptop)
    base = doc["base"]

    # Without the sign-in, nothing: the page says how to get one.
    browser.get(base)
    assert text_of(browser, "#error-title") == "Not signed in"
    assert "mocksync open" in text_of(browser, "#error-message")

    # The printed address signs in (and is gone from the address bar).
    browser.get(doc["url"])
    page_until(browser, lambda: browser.current_url == base, "the overview after sign-in")
    assert laptop.name in text_of(browser, "#device")
    assert "token" not in browser.current_url
    page_until(browser, lambda: text_of(browser, "#live-state") == "live", "the page live")

    # The same address does not sign in twice (a fresh browser profile gets nothing).
    browser.delete_all_cookies()
    browser.get(doc["url"])
    assert text_of(browser, "#error-title") == "Sign-in refused"
    assert "already used" in text_of(browser, "#error-message")
    browser.get(base)
    assert text_of(browser, "#error-title") == "Not signed in"

    # Signed in again, another site's page posting to ours is refused by its Origin (its
    # cookie may even be sent: 127.0.0.1 on another port is the same site to a browser).
    sign_in(browser, laptop)
    with evil_site(base + "reconnect") as evil:
        browser.get(evil)
        page_until(browser, lambda: text_of(browser, "#error-title") == "Refused",
                   "the forged request refused")
        assert "Origin" in text_of(browser, "#error-message")

    # A rebound DNS name pointing at 127.0.0.1 gets nothing either.
    port = base.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    browser.get(f"http://{REBIND_HOST}:{port}/")
    assert text_of(browser, "#error-title") == "Refused"
    assert "DNS rebinding" in text_of(browser, "#error-message")

    # A daemon told not to serve the page says so when asked for it.
    quiet = web_crew.team.device("dave-laptop", "dave").start(relay=False, ui=False)
    res = quiet.ms("open", "--no-browser", check=False)
    assert res.code == 1 and "web page is off" in res.err and "--no-ui" in res.err


def test_a_teammates_edit_appears_live_without_a_reload(web_crew: Crew, browser: Any) -> None:
    team, laptop, desktop, bob = web_crew.team, *web_crew.all
    name = laptop.add_example("petstore", "web-live.json")
    env = laptop.share(name)["uuid"]
    doc = team.synced(env, laptop, desktop, bob)
    route = doc["routes"][0]["uuid"]

    base = sign_in(browser, laptop)
    page_until(browser, lambda: browser.find_elements(By.CSS_SELECTOR, f'tr[data-env="{env}"]'),
               "the shared environment on the overview")
    assert text_of(browser, "#relay-state") == "connected"
    assert "bob" in text_of(browser, "#peers")
    screenshot(browser, "overview")

    browser.get(f"{base}env/{env}")
    assert text_of(browser, "#env-state") == "synced"
    page_until(browser, lambda: text_of(browser, "#live-state") == "live", "the page live")
    before = len(browser.find_elements(By.CSS_SELECTOR, "#timeline li"))
    browser.execute_script("window.__sameDocument = 'yes'")

    def bobs_edit(d: dict[str, Any]) -> None:
        next(r for r in d["routes"] if r["uuid"] == route)["endpoint"] = "bob/was/here"
    bob.edit(env, bobs_edit)

    first = page_until(browser, lambda: len(browser.find_elements(
        By.CSS_SELECTOR, "#timeline li")) > before and text_of(browser, "#timeline li"),
        "Bob's change set on the timeline")
    assert "bob (bob-laptop)" in first
    assert browser.execute_script("return window.__sameDocument") == "yes", "the page reloaded"
    laptop.wait_doc(env, lambda d: route_endpoint(d, route) == "bob/was/here", "Bob's edit")


def test_a_conflict_is_resolved_with_a_click_and_both_files_agree(web_crew: Crew,
                                                                 browser: Any) -> None:
    team, laptop, desktop, bob = web_crew.team, *web_crew.all
    name = laptop.add_example("petstore", "web-conflict.json")
    env = laptop.share(name)["uuid"]
    doc = team.synced(env, laptop, desktop, bob)
    route = doc["routes"][0]["uuid"]

    base = sign_in(browser, laptop)
    browser.get(f"{base}env/{env}")
    page_until(browser, lambda: text_of(browser, "#live-state") == "live", "the page live")
    assert browser.find_elements(By.CSS_SELECTOR, "#no-conflicts")

    # Alice and Bob each set the same route's path on the version their editor had.
    alices, bobs = copy.deepcopy(doc), copy.deepcopy(doc)
    next(r for r in alices["routes"] if r["uuid"] == route)["endpoint"] = "alice/path"
    next(r for r in bobs["routes"] if r["uuid"] == route)["endpoint"] = "bob/path"
    laptop_file, bob_file = laptop.file_of(env), bob.file_of(env)
    assert laptop_file is not None and bob_file is not None
    laptop.save(laptop_file.name, alices)
    bob.wait_doc(env, lambda d: route_endpoint(d, route) == "alice/path", "Alice's path")
    bob.save(bob_file.name, bobs)

    # The conflict appears on Alice's open page by itself, the two values side by side.
    page_until(browser, lambda: browser.find_elements(By.CSS_SELECTOR, ".conflict"),
               "the conflict")
    ours = text_of(browser, ".conflict .side.ours pre")
    theirs = text_of(browser, ".conflict .side.theirs pre")
    assert (ours, theirs) == ('"alice/path"', '"bob/path"')
    assert "bob" in text_of(browser, ".conflict .side.theirs h4")
    screenshot(browser, "environment")

    click(browser, ".conflict .take-theirs")
    page_until(browser, lambda: "conflict resolved" in text_of(browser, ".notices"),
               "the resolve confirmed")
    page_until(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#no-conflicts"),
               "no conflict left")
    team.everywhere(env, (laptop, bob), lambda d: route_endpoint(d, route) == "bob/path",
                    "Bob's path, taken by Alice's click")
    team.synced(env, laptop, desktop, bob)
    assert laptop.doc(env) == bob.doc(env)
    for dev in (laptop, bob):
        team.wait(lambda dev=dev: dev.conflicts(env) == [], f"no conflicts on {dev.name}")


def test_the_space_page_invites_and_removes(web_crew: Crew, browser: Any) -> None:
    team, laptop = web_crew.team, web_crew.laptop
    base = sign_in(browser, laptop)
    browser.find_element(By.LINK_TEXT, "team").click()
    page_until(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#members"),
               "the members table")
    members = text_of(browser, "#members")
    assert "alice" in members and "bob" in members and "admin" in members

    # Invite: the page shows the token once; Carol joins with it.
    click(browser, "#invite")
    token = page_until(browser, lambda: text_of(browser, "#invite-token"), "the invite token")
    assert token.startswith("mocksync1-")
    space_url = browser.current_url
    assert space_url.startswith(base + "space/")
    page_until(browser, lambda: text_of(browser, "#live-state") == "live", "the page live")
    carol = team.device("carol-laptop", "carol")
    carol.ms("join", token, "--timeout", "30", timeout=60)
    page_until(browser, lambda: "carol" in text_of(browser, "#members"),
               "Carol among the members, without a reload")
    screenshot(browser, "space")

    # Remove her again (the page asks first).
    click(browser, 'tr[data-member="carol"] .remove-member')
    browser.switch_to.alert.accept()
    page_until(browser, lambda: "removed member carol" in text_of(browser, ".notices"),
               "the removal confirmed")
    assert "carol" not in text_of(browser, "#members")
    listed = laptop.ms("members", "team", "--json").json()
    assert "carol" not in [m["name"] for m in listed["members"]]
