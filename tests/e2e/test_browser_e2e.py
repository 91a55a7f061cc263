"""The dashboard in a real headless Chromium (Debian's chromium and chromium-driver; .ci/run installs
them), driven by selenium: sign in, watch a channel's counts change after messages are sent (the
page refreshes itself), open a failed message, replay it and see it SENT; then an analyst's day
(issue 21): the channel list's targets, states and charts, a channel's steps and masked file, the
messages page's count and Replay selected, the replay marked on the message page, the filter that
stopped a message, JSON indented, the report with its chart and CSV.  Every page is kept as
a screenshot in tests/artifacts/ and checked for fitting 1280 px without sideways scrolling.

Skipped, with the reason, where chromium or selenium is missing (a developer's machine); CI has
both."""

from __future__ import annotations

import os
import re
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


FEED = """
description = "Results and registrations to the FHIR gateway"

[source]
type = "mllp"
listen = "127.0.0.1:0"

[[filter]]
name = "no-results"
when = "msg['MSH.9.1'] != 'ORU'"

[[transform]]
edit = [{{ set = "MSH.5", value = "GATEWAY" }}]

[[transform]]
inline = '{{"resourceType": "Patient", "id": {{{{ msg["MSH.10"] | tojson }}}}, "account": {{{{ msg["PID.18.1"] | tojson }}}}}}'
outbound = "json"

[[destination]]
name = "gateway"
type = "file"
directory = "{outbox}"
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
    root = tmp_path_factory.mktemp("browser")
    daemon = Daemon(root / "d", {"relay": RELAY.format(port=peer.port), "feed": FEED.format(outbox=root / "gateway")},
                    extra_config=viewer)
    daemon.start(2)
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
    """A screenshot for the CI artifacts, and the check that the page fits 1280 px.  With
    ``SWITCHBOARD_SCREENSHOTS=DIR`` (docs/screenshots.py) the analyst's pages go to DIR too: the
    screenshots in docs/dashboard.md are these pages, as tested."""
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    wanted = os.environ.get("SWITCHBOARD_SCREENSHOTS")
    if wanted and name.startswith("dashboard-"):
        driver.save_screenshot(str(Path(wanted) / f"{name}.png"))
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


def test_an_analysts_day(world, browser):
    """Issue 21's points in the browser, each page kept (docs/dashboard.md shows these shots)."""
    daemon, peer, refuse = world
    refuse.clear()
    base = f"http://127.0.0.1:{daemon.admin_port}"
    feed = MllpClient(daemon.ports["feed"])
    for number in range(3):
        assert feed.request(hl7(f"FEED-{number}", account=f"ACC2{number}"))["code"] == "AA"
    assert feed.request(hl7("RESULT-1", msg_type="ORU^R01"))["code"] == "AA"
    feed.close()
    relay = MllpClient(daemon.ports["relay"])
    for number in range(2):
        assert relay.request(hl7(f"DAY-{number}", account=f"ACC3{number}"))["code"] == "AA"
    relay.close()
    browser.delete_all_cookies()
    browser.get(base + "/login")
    browser.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    browser.find_element(By.ID, "sign-in").click()
    wait(browser, lambda d: d.current_url == base + "/", "the channels page")

    # 1, 6: targets, states, description, a chart per channel; the favicon answered
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.traffic")) == 2, "a chart per channel")
    agency = browser.find_element(By.CSS_SELECTOR, '#channel-relay [data-destination="agency"]')
    assert f"→ 127.0.0.1:{peer.port}" in agency.text and agency.find_element(By.CSS_SELECTOR, ".dstate").text == "ok"
    assert "Results and registrations to the FHIR gateway" in browser.find_element(By.ID, "channel-feed").text
    assert browser.execute_script("return fetch('/favicon.ico').then(answer => answer.status)") == 204
    keep(browser, "dashboard-channels")

    # 4: a channel's steps by name and its file
    browser.find_element(By.LINK_TEXT, "feed").click()
    steps = wait(browser, lambda d: d.find_element(By.ID, "steps"), "the steps")
    assert "no-results" in steps.text and "set MSH.5 value=GATEWAY" in steps.text
    browser.find_element(By.CSS_SELECTOR, "#config summary").click()
    assert 'name = "no-results"' in wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#config pre").text, "the file")
    keep(browser, "dashboard-channel")

    # 3: the messages page, its count, two ticked and replayed as one replay
    browser.find_element(By.LINK_TEXT, "Messages").click()
    Select(browser.find_element(By.NAME, "channel")).select_by_visible_text("relay")
    browser.find_element(By.NAME, "control_id").send_keys("DAY-1")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait(browser, lambda d: d.find_element(By.ID, "count").text.startswith("1 message matches"), "the count")
    browser.find_element(By.NAME, "control_id").clear()
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait(browser, lambda d: "control_id=&" in d.current_url or "control_id" not in d.current_url, "every relay message")
    boxes = browser.find_elements(By.CSS_SELECTOR, 'input[name="id"]')
    for box in boxes[:2]:
        box.click()
    keep(browser, "dashboard-messages")
    browser.find_element(By.ID, "replay-selected").click()
    wait(browser, lambda d: "Replayed 2 of 2 selected" in d.find_element(By.CSS_SELECTOR, ".flash").text, "the replay note")

    # 2: the replayed attempt marked, the filter named, JSON indented
    browser.find_elements(By.CSS_SELECTOR, "a.message-link")[0].click()
    marks = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "td .replay-mark") or d.refresh(), "the replay mark", 30)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", marks[0])
    keep(browser, "dashboard-message-replayed")
    browser.get(base + "/messages?go=1&channel=feed&status=FILTERED")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "a.message-link"), "the filtered message")[0].click()
    assert "no-results" in wait(browser, lambda d: d.find_element(By.ID, "filtered-by").text, "who filtered it")
    assert "filter no-results stopped the message" in browser.find_element(By.ID, "not-transformed").text
    keep(browser, "dashboard-message-filtered")
    browser.get(base + "/messages?go=1&channel=feed&control_id=FEED-0")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "a.message-link"), "the JSON message")[0].click()
    shown = wait(browser, lambda d: [p.text for p in d.find_elements(By.CSS_SELECTOR, "pre.content") if "resourceType" in p.text],
                 "the JSON shown")
    assert re.search(r'^\{\n  "resourceType": "Patient",\n  "id": "FEED-0"', shown[0])
    keep(browser, "dashboard-message-json")

    # 5: the report, its chart and CSV
    browser.find_element(By.LINK_TEXT, "Report").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.days g.day"), "the chart per day")
    rows = {row.get_attribute("data-channel") for row in browser.find_elements(By.CSS_SELECTOR, "#report-channels tr[data-channel]")}
    assert rows == {"relay", "feed"}
    assert "/report/csv?" in browser.find_element(By.ID, "report-csv").get_attribute("href")
    keep(browser, "dashboard-report")
