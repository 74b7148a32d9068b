"""The dashboard in a real browser against a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import BIN, Server, chrome


def wait(driver, seconds, what, check):
    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.05).until(lambda d: check(d))
    except TimeoutException:
        raise AssertionError(f"not within {seconds}s: {what}") from None


def live(driver, url: str) -> None:
    driver.get(url)
    wait(driver, 10, "the event stream is live", lambda d: d.find_element(By.ID, "conn").text == "live")


def row(driver, key: str):
    found = driver.find_elements(By.CSS_SELECTOR, f'#locks-body tr[data-key="{key}"]')
    return found[0] if found else None


def cell(tr, label: str) -> str:
    return tr.find_element(By.CSS_SELECTOR, f'td[data-label="{label}"]').text


def shown(driver, key: str, label: str):
    """The text of one cell of `key`'s row, read in one step (the table is
    redrawn on every event), or None when the row is not shown."""
    return driver.execute_script(
        """const tr = [...document.querySelectorAll('#locks-body tr')].find(r => r.dataset.key === arguments[0]);
           return tr ? tr.querySelector(`td[data-label="${arguments[1]}"]`).textContent : null;""",
        key, label)


def sign_in(driver, url: str, token: str) -> None:
    driver.get(url)
    wait(driver, 10, "the sign-in form", lambda d: d.find_element(By.ID, "signin").is_displayed())
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin-go").click()
    wait(driver, 10, "the event stream is live", lambda d: d.find_element(By.ID, "conn").text == "live")
    assert token not in driver.current_url


def severe_logs(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_the_page_loads_with_no_console_error_and_no_failed_request(server: Server, browser) -> None:
    server.cli("acquire", "repo/acme", "--ttl", "5m", "--task", "PR-1")
    live(browser, server.url + "/")
    for view in ("waiting", "history", "charts", "unhealthy", "locks"):
        browser.find_element(By.CSS_SELECTOR, f'.tabs button[data-view="{view}"]').click()
        time.sleep(0.3)
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(r => [r.name, r.responseStatus])")
    assert resources, "the page loaded its assets and data"
    failed = [r for r in resources if r[1] not in (200, 0)]
    assert failed == [], failed
    assert severe_logs(browser) == []
    csp = subprocess.run(["curl", "-sI", server.url + "/"], capture_output=True, text=True).stdout.lower()
    assert "content-security-policy: default-src 'none'; script-src 'self'" in csp


def test_a_cli_lock_appears_at_once_counts_down_and_leaves_with_its_reason(server: Server, browser) -> None:
    live(browser, server.url + "/")
    server.cli("acquire", "repo/live", "--ttl", "60s", "--task", "T-7")
    wait(browser, 1.0, "the new lock shows without reload", lambda d: row(d, "repo/live"))
    assert shown(browser, "repo/live", "Task") == "T-7"
    assert shown(browser, "repo/live", "Owner") == "cli-user"
    assert shown(browser, "repo/live", "State") == "healthy"
    first = shown(browser, "repo/live", "Lease left")
    time.sleep(3.3)  # the countdown ticks once a second
    later = shown(browser, "repo/live", "Lease left")
    assert first.endswith("s") and later.endswith("s"), (first, later)
    assert int(later[:-1]) <= int(first[:-1]) - 2, (first, later)
    server.cli("release", "repo/live")
    wait(browser, 1.0, "the released lock leaves without reload", lambda d: row(d, "repo/live") is None)
    browser.find_element(By.CSS_SELECTOR, '.tabs button[data-view="history"]').click()
    wait(browser, 5, "the release is in the history with its reason",
         lambda d: any("released" in r.text and "completed" in r.text for r in d.find_elements(By.CSS_SELECTOR, "#history-body tr")))


def test_a_holder_killed_with_sigkill_shows_dead_and_ends_as_dead_process(server: Server, browser) -> None:
    live(browser, server.url + "/")
    # A process-bound lock on the server's own store (not through the server).
    env = dict(server.env, LOCKSMITH_OWNER="doomed")
    run = subprocess.Popen([BIN, "run", "-l", "repo/doomed", "--ttl", "10m", "--", "sleep", "60"],
                           env=env, start_new_session=True)
    wait(browser, 5, "the holder shows", lambda d: row(d, "repo/doomed"))
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    seen = wait(browser, 10, "the dead holder shows as dead or leaves",
                lambda d: "gone" if (st := shown(d, "repo/doomed", "State")) is None else ("dead" if "dead" in st else None))
    assert seen in ("dead", "gone")
    wait(browser, 10, "the lock leaves", lambda d: row(d, "repo/doomed") is None)
    hist = server.cli("--json", "history", "repo/doomed")
    assert "dead_process" in hist, hist


def force_dialog(driver, key: str):
    tr = wait(driver, 5, f"{key} shows", lambda d: row(d, key))
    tr.find_element(By.CSS_SELECTOR, "button.force").click()
    dialog = driver.find_element(By.ID, "force")
    wait(driver, 2, "the confirmation opens", lambda d: dialog.is_displayed())
    return dialog


def test_an_admin_forces_with_a_reason_and_an_old_fence_is_refused(secured: Server, browser) -> None:
    worker = secured.tokens["worker"]
    secured.cli("acquire", "repo/stuck", "--ttl", "10m", "--task", "deploy", token=worker)
    sign_in(browser, secured.url + "/", secured.tokens["ops"])
    dialog = force_dialog(browser, "repo/stuck")
    assert "deploy" in dialog.text and "cli-user" in dialog.text, dialog.text
    browser.find_element(By.ID, "force-go").click()  # no reason yet
    wait(browser, 2, "a reason is asked for", lambda d: "reason" in d.find_element(By.ID, "force-error").text.lower())
    assert row(browser, "repo/stuck") is not None
    browser.find_element(By.ID, "force-reason").send_keys("deploy hung for an hour")
    browser.find_element(By.ID, "force-go").click()
    wait(browser, 2, "the lock leaves", lambda d: row(d, "repo/stuck") is None)
    forced = secured.cli("--json", "history", "repo/stuck", token=secured.tokens["ops"])
    assert "forced" in forced and "deploy hung for an hour" in forced, forced

    # An old screen: the holder changes while the dialog is open.
    secured.cli("acquire", "repo/moving", "--ttl", "10m", token=worker)
    force_dialog(browser, "repo/moving")
    secured.cli("release", "repo/moving", token=secured.tokens["ops"])  # by owner name: admin
    secured.cli("acquire", "repo/moving", "--ttl", "10m", "--task", "newer", token=worker)
    browser.find_element(By.ID, "force-reason").send_keys("clearing what I saw")
    browser.find_element(By.ID, "force-go").click()
    wait(browser, 2, "the refusal is shown", lambda d: "newer" in d.find_element(By.ID, "force-error").text)
    status = secured.cli("--json", "status", "repo/moving", token=worker)
    assert '"task":"newer"' in status.replace(" ", ""), status


def test_a_viewer_has_no_force_control_and_the_api_refuses_it(secured: Server, browser) -> None:
    secured.cli("acquire", "repo/seen", "--ttl", "10m", token=secured.tokens["worker"])
    sign_in(browser, secured.url + "/", secured.tokens["board"])
    wait(browser, 5, "the lock shows", lambda d: row(d, "repo/seen"))
    assert browser.find_elements(By.CSS_SELECTOR, "button.force") == []
    status = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
           fetch('/v1/locks/repo/seen/force-release', {method: 'POST',
             headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + arguments[0]},
             body: JSON.stringify({reason: 'not allowed'})}).then(r => done(r.status));""",
        secured.tokens["board"])
    assert status == 403
    assert "seen" in secured.cli("--json", "status", "repo/seen", token=secured.tokens["board"])
    assert severe_logs(browser) == [] or all("403" in e["message"] for e in severe_logs(browser))


def test_on_a_phone_nothing_scrolls_sideways(server: Server) -> None:
    server.cli("acquire", "repos/a-rather-long-key-name/with/many/segments/that-could-overflow", "--ttl", "5m",
               "--task", "a-long-task-identifier-0123456789")
    d = chrome(390, 844)
    try:
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        live(d, server.url + "/")
        wait(d, 5, "the lock shows", lambda x: x.find_elements(By.CSS_SELECTOR, "#locks-body tr"))
        for view in ("locks", "waiting", "history", "charts", "unhealthy"):
            d.find_element(By.CSS_SELECTOR, f'.tabs button[data-view="{view}"]').click()
            time.sleep(0.4)
            wide = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            assert wide[0] <= wide[1], (view, wide)
        shots = os.environ.get("LOCKSMITH_SCREENSHOTS")
        if shots:
            d.find_element(By.CSS_SELECTOR, '.tabs button[data-view="locks"]').click()
            time.sleep(0.3)
            d.save_screenshot(str(Path(shots) / "dashboard-phone.png"))
    finally:
        d.quit()


def test_keyboard_reaches_every_tab_and_the_filters_are_kept_in_the_url(server: Server, browser) -> None:
    server.cli("acquire", "repo/a", "--ttl", "5m")
    server.cli("acquire", "jobs/b", "--ttl", "5m")
    live(browser, server.url + "/")
    browser.find_element(By.ID, "f-prefix").send_keys("repo/")
    wait(browser, 3, "the filter applies", lambda d: row(d, "jobs/b") is None and row(d, "repo/a") is not None)
    wait(browser, 3, "the filter is in the URL", lambda d: "prefix=repo%2F" in d.current_url)
    shared = browser.current_url
    browser.get(shared)
    wait(browser, 5, "a shared view opens filtered", lambda d: row(d, "repo/a") is not None and row(d, "jobs/b") is None)
    assert browser.find_element(By.ID, "f-prefix").get_attribute("value") == "repo/"
    tabs = browser.find_elements(By.CSS_SELECTOR, ".tabs button")
    assert all(t.get_attribute("tabindex") in (None, "0") for t in tabs)
    tabs[2].send_keys("\n")
    wait(browser, 2, "Enter on a tab opens it", lambda d: d.find_element(By.ID, "v-history").is_displayed())
