"""The dashboard in a real headless Chromium (Debian's chromium and chromium-driver; .ci/run installs
them), driven by selenium: sign in, watch a channel's counts change after messages are sent (the
page refreshes itself), open a failed message, replay it and see it SENT.  Every page is kept as
a screenshot in tests/artifacts/ and checked for fitting 1280 px without sideways scrolling.

Skipped, with the reason, where chromium or selenium is missing (a developer's machine); CI has
both."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from support.daemon import ADMIN_TOKEN, Daemon, MllpClient, MllpPeer, ack_for, control_id_of, hl7

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WIDTH, HEIGHT = 1280, 800

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("no /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver; "
                ".ci/run does)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

RELAY = """
[source]
type = "mllp"
listen = "127.0.0.1:0"

[metadata]
account = "PID.18.1"

[[destination]]
name = "agency"
type = "mllp"
connect = "127.0.0.1:{port}"
"""


VIEWER_PASSWORD = "a viewer's long password"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    refuse = threading.Event()  # while set, the agency refuses the FAILS-* messages (only those:
    # the OK-* ones may still be on their way when the test sets it)
    peer = MllpPeer(lambda payload: ack_for(
        payload, "AR" if refuse.is_set() and control_id_of(payload).startswith("FAILS") else "AA"))
    from argon2 import PasswordHasher

    viewer = (f'[[admin.user]]\nname = "vera"\nrole = "viewer"\nphi = false\n'
              f'password = "{PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(VIEWER_PASSWORD)}"\n')
    daemon = Daemon(tmp_path_factory.mktemp("browser") / "d", {"relay": RELAY.format(port=peer.port)},
                    extra_config=viewer)
    daemon.start(1)
    yield daemon, peer, refuse
    daemon.stop()
    peer.close()


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="switchboard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WIDTH},{HEIGHT}", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait(driver, predicate, what: str, timeout: float = 20.0):
    # the page refreshes its own table: an element read mid-refresh is stale, so try again
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
                         ).until(lambda d: predicate(d), message=what)


def keep(driver, name: str) -> None:
    """A screenshot for the CI artifacts, and the check that the page fits 1280 px."""
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= WIDTH, f"{name}: the page is {width}px wide at a {WIDTH}px window"


def count(driver, channel: str, kind: str) -> int:
    return int(driver.find_element(By.CSS_SELECTOR, f'#channel-{channel} td[data-count="{kind}"]').text)


def test_sign_in_watch_counts_open_a_failure_and_replay_it(world, browser):
    daemon, peer, refuse = world
    base = f"http://127.0.0.1:{daemon.admin_port}"
    browser.get(base + "/")
    wait(browser, lambda d: d.current_url == base + "/login", "the redirect to /login")
    keep(browser, "login")
    browser.find_element(By.ID, "token").send_keys("wrong")
    browser.find_element(By.ID, "sign-in").click()
    refused = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".error"), "the refusal to be shown")
    assert "not an admin token" in refused[0].text
    browser.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    browser.find_element(By.ID, "sign-in").click()
    wait(browser, lambda d: d.current_url == base + "/", "the channels page")
    assert browser.get_cookie("switchboard_session")["httpOnly"] is True
    before = count(browser, "relay", "received")

    client = MllpClient(daemon.ports["relay"])
    for number in range(3):
        assert client.request(hl7(f"OK-{number}", account=f"ACC{number}"))["code"] == "AA"
    refuse.set()
    assert client.request(hl7("FAILS-1", account="ACC9"))["code"] == "AA"   # stored; the agency will say AR
    client.close()
    # no reload here: the page refreshes its own table
    wait(browser, lambda d: count(d, "relay", "received") == before + 4, "the received count to change")
    # the AR arrives after delivery; under a loaded CI box this can outlast several refreshes, so
    # reload the page ourselves as a reader without JavaScript would (bounded: 60 s)
    wait(browser, lambda d: count(d, "relay", "errored") == 1 or d.refresh(), "the errored count", 60)
    wait(browser, lambda d: count(d, "relay", "sent") == 3 or d.refresh(), "the sent count", 60)
    keep(browser, "channels")

    browser.find_element(By.LINK_TEXT, "relay").click()
    Select(browser.find_element(By.NAME, "status")).select_by_visible_text("ERROR")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait(browser, lambda d: "status=ERROR" in d.current_url, "the filtered list")
    links = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "a.message-link"), "the failed message listed")
    assert len(links) == 1
    keep(browser, "channel")

    links[0].click()
    wait(browser, lambda d: "/messages/" in d.current_url, "the message page")
    assert browser.find_element(By.ID, "message-status").text == "ERROR"
    agency = browser.find_element(By.ID, "destination-agency")
    assert "AR" in agency.text                                        # the agency's answer, side by side
    field = browser.find_element(By.CSS_SELECTOR, '#destination-agency span[title="MSH-10"]')
    assert field.text == "FAILS-1"                                    # field numbers on hover
    keep(browser, "message-error")

    refuse.clear()
    browser.find_element(By.ID, "replay").click()
    wait(browser, lambda d: "Replayed" in d.find_element(By.CSS_SELECTOR, ".flash").text, "the replay note")

    def sent(driver) -> bool:
        if driver.find_element(By.ID, "message-status").text == "SENT":
            return True
        driver.refresh()
        return False

    wait(browser, sent, "the replayed message to be SENT")
    assert [control_id_of(p) for p in peer.received].count("FAILS-1") == 2
    keep(browser, "message-sent")

    browser.find_element(By.LINK_TEXT, "Messages").click()
    browser.find_element(By.NAME, "meta").send_keys("account=ACC9")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "a.message-link")) == 1, "one search result")
    keep(browser, "search")

    browser.find_element(By.ID, "sign-out").click()
    wait(browser, lambda d: d.current_url == base + "/login", "signed out")
    browser.get(base + "/")
    assert browser.current_url == base + "/login"


def test_a_viewer_without_phi_signs_in_by_name_and_sees_no_content_or_buttons(world, browser):
    """Users and roles (docs/users-and-roles.md) in a real browser: name and password, the role in
    the header, no Start/Stop/Pause or Replay, the message's content hidden."""
    daemon, _peer, _refuse = world
    base = f"http://127.0.0.1:{daemon.admin_port}"
    client = MllpClient(daemon.ports["relay"])
    assert client.request(hl7("VIEWED-1", account="ACC7"))["code"] == "AA"
    client.close()
    browser.delete_all_cookies()
    browser.get(base + "/login")
    browser.find_element(By.ID, "name").send_keys("vera")
    browser.find_element(By.ID, "password").send_keys(VIEWER_PASSWORD)
    browser.find_element(By.ID, "sign-in-password").click()
    wait(browser, lambda d: d.current_url == base + "/", "the channels page")
    assert "vera" in browser.find_element(By.CSS_SELECTOR, ".who").text
    assert "viewer" in browser.find_element(By.CSS_SELECTOR, ".who").text
    assert not browser.find_elements(By.CSS_SELECTOR, "button.action")
    keep(browser, "viewer-channels")
    browser.get(base + "/search?go=1&control_id=VIEWED-1")
    assert not browser.find_elements(By.NAME, "text")               # no text search without PHI
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "a.message-link"), "the message listed")[0].click()
    wait(browser, lambda d: "/messages/" in d.current_url, "the message page")
    assert "hidden" in browser.find_element(By.ID, "content-hidden").text
    assert not browser.find_elements(By.ID, "replay") and "DOE" not in browser.page_source
    keep(browser, "viewer-message")
