"""The run page against a real server and its built-in runner: a run watched going green live
(its status, the job graph and the log change in place), a failed run opened at its failing
step, log search, line links, cancel, re-running only the failed jobs, and a read-only viewer
who gets no buttons and whom the API refuses.

Steps that must wait block on a FIFO that the test opens for writing when it wants them to go
on, so nothing here sleeps."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, LocatorAssertions, Page, expect

from tests.serverproc import until
from tests.web.conftest import Web, shot, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def open_gate(fifo: Path, answer: str = "go") -> None:
    """Write one line to the FIFO a step is reading (waiting, bounded, for it to start reading)."""

    def writer() -> int | None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nobody is reading yet
                return None
            raise

    fd: int = until(writer, 15, f"a step to read {fifo.name}")
    try:
        os.write(fd, f"{answer}\n".encode())
    finally:
        os.close(fd)


def status(page: Page) -> LocatorAssertions:
    return expect(page.get_by_test_id("run-status"))


def node(page: Page, job: str) -> Locator:
    return page.locator(f'a.dag-node[data-job="{job}"]')


def line(page: Page, text: str) -> Locator:
    return page.locator(".log-line", has_text=text)


LIVE = """\
service: shop
jobs:
  lint:
    run: printf '\\033[1;32mlint ok\\033[0m\\n'
  build:
    steps:
      - name: prepare
        run: echo preparing
      - name: wait-for-gate
        run: |
          printf '\\033[33mwaiting for the gate\\033[0m\\n'
          read answer < {fifo}
          echo "gate opened: $answer"
  publish:
    needs: [lint, build]
    run: printf '\\033[38;5;208morange\\033[0m and \\033[38;2;10;200;30mtruecolor\\033[0m\\n'
"""


def test_a_run_goes_green_live(web: Web, page: Page, tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    web.service("shop", {"conveyor.yml": LIVE.format(fifo=fifo)}, message="Ship the cart\n\nbody")
    run_id = web.trigger("shop")["id"]
    signed_in(page, web, web.admin_token, next=f"/runs/{run_id}")
    expect(page).to_have_url(re.compile(rf"/runs/{run_id}$"))

    expect(page.get_by_role("heading", level=1)).to_contain_text(f"run #{run_id}")
    expect(page.locator(".run-commit")).to_contain_text("Ship the cart")
    status(page).to_contain_text("running")
    # The graph is laid out by `needs`: publish after both of the jobs it needs.
    expect(node(page, "build")).to_have_attribute("data-state", "running")
    expect(node(page, "publish")).to_have_attribute("data-state", "pending")
    boxes = {job: node(page, job).bounding_box() for job in ("lint", "build", "publish")}
    assert boxes["publish"]["x"] > boxes["build"]["x"] + boxes["build"]["width"] - 1, boxes
    centre = {job: box["x"] + box["width"] / 2 for job, box in boxes.items()}
    assert abs(centre["lint"] - centre["build"]) < 1, boxes  # one column: no needs

    # Choose the build job from the graph, with the keyboard.
    node(page, "build").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"\?job=build$"))
    expect(page.locator("#job-heading")).to_contain_text("build")
    expect(node(page, "build")).to_have_attribute("aria-current", "true")
    waiting = line(page, "waiting for the gate")
    expect(waiting).to_be_visible()
    expect(waiting.locator(".ansi-fg-3")).to_have_css("color", "rgb(245, 197, 66)")
    expect(page.locator('details.step[data-step="1"]')).to_have_attribute("open", "")
    expect(page.locator(".log-stream-state")).to_contain_text("Streaming live")
    # The run's duration ticks while it runs.
    ticking = page.locator(".run-facts .duration")
    expect(ticking).to_have_text(re.compile(r"\d s$"))
    expect(ticking).not_to_have_text(ticking.inner_text())
    page.evaluate("window.__samePage = true")
    shot(page, "running")

    open_gate(fifo)
    expect(line(page, "gate opened: go")).to_be_visible()
    status(page).to_contain_text("succeeded", timeout=20_000)
    for job in ("lint", "build", "publish"):
        expect(node(page, job)).to_have_attribute("data-state", "succeeded")
    expect(node(page, "publish")).to_contain_text(re.compile(r"succeeded · [\d.]+ s"))
    release = web.api.get(f"/runs/{run_id}").json()["release"]
    expect(page.get_by_role("link", name=f"release #{release}")).to_have_attribute(
        "href", f"/releases/{release}"
    )
    assert page.evaluate("window.__samePage") is True, "the page reloaded instead of updating"

    # 256-colour and truecolor output of the last job.
    node(page, "publish").click()
    orange = line(page, "orange and truecolor")
    expect(orange).to_be_visible()
    expect(orange.get_by_text("orange", exact=True)).to_have_css("color", "rgb(255, 135, 0)")
    expect(orange.get_by_text("truecolor", exact=True)).to_have_css("color", "rgb(10, 200, 30)")
    shot(page, "succeeded")


FAILING = """\
service: shop
jobs:
  build:
    run: echo built
  docs:
    run: echo docs
  test:
    needs: [build]
    steps:
      - name: unit
        run: |
          echo "unit tests pass"
          echo '<img src=x onerror="window.__pwned=1"><b>not bold</b>'
      - name: integration
        run: |
          for i in 1 2 3 4 5; do echo "case $i ok"; done
          printf '\\033[31mneedle: expected 200, got 500\\033[0m\\n'
          test -f {marker}
      - name: report
        run: echo never
"""


def test_a_failed_run_opens_at_its_failing_step(web: Web, page: Page, tmp_path: Path) -> None:
    marker = tmp_path / "fixed"
    web.service("shop", {"conveyor.yml": FAILING.format(marker=marker)})
    first = web.wait_run(web.trigger("shop")["id"])
    assert first["status"] == "failed"
    run_id = first["id"]
    signed_in(page, web, web.admin_token, next=f"/runs/{run_id}")

    status(page).to_contain_text("failed")
    expect(node(page, "test")).to_have_attribute("aria-current", "true")
    expect(page.locator("#job-heading")).to_contain_text("test")
    unit, integration, report = (page.locator(f'details.step[data-step="{n}"]') for n in range(3))
    expect(integration).to_have_attribute("open", "")
    expect(integration.locator("summary")).to_contain_text("exit 1")
    expect(unit).not_to_have_attribute("open", "")
    expect(report.locator("summary")).to_contain_text("skipped")
    needle = line(page, "needle: expected 200, got 500")
    expect(needle).to_be_in_viewport()
    expect(needle.locator(".ansi-fg-1")).to_have_count(1)
    expect(page.locator(".log-stream-state")).to_contain_text("Log complete · 8 lines")
    shot(page, "failed")
    page.set_viewport_size({"width": 1024, "height": 768})
    expect(needle).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1024, "wider than 1024 px"
    shot(page, "failed-1024")
    page.set_viewport_size({"width": 1280, "height": 800})

    # Log text is shown as text, never run as markup.
    unit.locator("summary").click()
    expect(line(page, "not bold")).to_contain_text('<img src=x onerror="window.__pwned=1">')
    expect(page.locator(".log img, .log b")).to_have_count(0)
    assert page.evaluate("window.__pwned") is None

    # Search: the count, the matching line marked, the others hidden.
    search = page.get_by_label("Search log")
    search.fill("CASE 3")
    expect(page.locator("#log-search-count")).to_have_text("1 of 1 matching line")
    expect(line(page, "case 3 ok").locator("mark")).to_have_text("case 3")
    expect(line(page, "case 3 ok")).to_be_visible()
    expect(line(page, "case 2 ok")).to_be_hidden()
    search.fill("ok")
    expect(page.locator("#log-search-count")).to_have_text("1 of 5 matching lines")
    search.press("Enter")
    expect(page.locator("#log-search-count")).to_have_text("2 of 5 matching lines")
    search.fill("no such text")
    expect(page.locator("#log-search-count")).to_have_text("No matching lines")
    shot(page, "search")
    search.fill("")
    expect(line(page, "case 2 ok")).to_be_visible()

    # A line link: clicking a line number puts it in the address; opening that address shows
    # the line highlighted, its (closed) step opened.
    page.evaluate("window.__samePage = true")
    line(page, "case 4 ok").locator("a.ln").click()
    expect(page).to_have_url(re.compile(r"#Ltest-6$"))
    expect(page.locator("#Ltest-6")).to_have_class(re.compile("log-line-target"))
    assert page.evaluate("window.__samePage") is True
    page.goto(f"{web.url}/runs/{run_id}#Ltest-1")
    target = page.locator("#Ltest-1")
    expect(target).to_have_class(re.compile("log-line-target"))
    expect(target).to_contain_text("unit tests pass")
    expect(target).to_be_in_viewport()
    expect(unit).to_have_attribute("open", "")
    shot(page, "line-link")

    # Re-run only the failed jobs: the new run reuses build and docs and runs test again.
    marker.touch()
    page.get_by_role("button", name="Re-run failed jobs").click()
    expect(page).not_to_have_url(re.compile(rf"/runs/{run_id}(\?|#|$)"))
    new_id = int(page.url.rsplit("/", 1)[-1])
    second = web.wait_run(new_id)
    assert second["rerun_of"] == run_id
    assert second["status"] == "succeeded"
    jobs = {j["name"]: j for j in second["jobs"]}
    assert jobs["build"]["reason"] == f"reused from run {run_id}"
    assert jobs["docs"]["reason"] == f"reused from run {run_id}"
    assert jobs["test"]["reason"] is None
    ran = {x["job"] for x in web.api.get(f"/runs/{new_id}/logs").json()["lines"]}
    assert ran == {"test"}, "only the failed job ran again"
    status(page).to_contain_text("succeeded")
    expect(page.get_by_role("link", name=f"run #{run_id}", exact=True)).to_be_visible()
    node(page, "build").click()
    expect(page.locator(".job-note")).to_contain_text(f"Reused from run #{run_id}")
    shot(page, "rerun")


WAIT = """\
service: shop
jobs:
  wait:
    run: |
      echo "waiting forever"
      read x < {fifo}
  after:
    needs: [wait]
    run: echo never
"""


def test_cancelling_a_running_run(web: Web, page: Page, tmp_path: Path) -> None:
    fifo = tmp_path / "never"
    os.mkfifo(fifo)
    web.service("shop", {"conveyor.yml": WAIT.format(fifo=fifo)})
    run_id = web.trigger("shop")["id"]
    signed_in(page, web, web.admin_token, next=f"/runs/{run_id}")
    expect(line(page, "waiting forever")).to_be_visible()
    status(page).to_contain_text("running")
    expect(page.get_by_role("button", name="Re-run failed jobs")).to_have_count(0)

    page.get_by_role("button", name="Cancel run").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Cancel run #{run_id}")
    dialog.get_by_role("button", name="Cancel run").click()
    status(page).to_contain_text("cancelled")
    expect(node(page, "wait")).to_have_attribute("data-state", "cancelled")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(page.get_by_role("button", name="Re-run all jobs")).to_be_visible()
    expect(page.locator(".log-stream-state")).to_contain_text("Log complete")
    assert web.api.get(f"/runs/{run_id}").json()["status"] == "cancelled"
    shot(page, "cancelled")


def test_a_read_only_viewer_sees_no_actions_and_is_refused(
    web: Web, page: Page, tmp_path: Path
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    web.service("shop", {"conveyor.yml": WAIT.format(fifo=fifo)})
    run_id = web.trigger("shop")["id"]
    viewer = web.token("viewer", "read", user="vera")
    signed_in(page, web, viewer, next=f"/runs/{run_id}")
    expect(line(page, "waiting forever")).to_be_visible()
    status(page).to_contain_text("running")
    expect(page.locator(".run-actions button")).to_have_count(0)

    # The page's own session may not act either: the server refuses, not only the page.
    refused = page.evaluate(
        """async (id) => {
          const post = (path, body) => fetch(`/api/v1/runs/${id}/${path}`, {
            method: 'POST', credentials: 'same-origin',
            headers: {'X-Conveyor-CSRF': '1', 'Content-Type': 'application/json'},
            body: JSON.stringify(body)}).then((r) => r.status);
          return [await post('cancel', {}), await post('rerun', {failed_only: true})];
        }""",
        run_id,
    )
    assert refused == [403, 403]
    with httpx.Client(base_url=f"{web.url}/api/v1", timeout=10) as client:
        r = client.post(f"/runs/{run_id}/cancel", headers={"Authorization": f"Bearer {viewer}"})
        assert r.status_code == 403, r.text
    assert web.api.get(f"/runs/{run_id}").json()["status"] == "running"
    shot(page, "read-only")

    open_gate(fifo)
    status(page).to_contain_text("succeeded", timeout=20_000)
    expect(page.locator(".run-actions button")).to_have_count(0)


def test_ansi_colours_become_styled_text_and_nothing_else(web: Web, page: Page) -> None:
    """lib/ansi.js in the browser: SGR styles and colours map to classes or rgb() styles, other
    escape sequences vanish, and markup in a log line stays text."""
    page.goto(f"{web.url}/signin")
    rendered = page.evaluate(
        r"""async () => {
          const {ansiToFragment, stripAnsi} = await import('/static/lib/ansi.js');
          const show = (text) => {
            const div = document.createElement('div');
            div.appendChild(ansiToFragment(text));
            return [...div.childNodes].map((n) => n.nodeType === 3 ? ['#text', n.nodeValue]
              : [n.className, n.getAttribute('style') || '', n.textContent]);
          };
          return {
            basic: show('\x1b[1;31mred bold\x1b[0m plain \x1b[92mbright\x1b[39m'),
            extended: show('\x1b[38;5;196mred\x1b[48;5;244m on grey\x1b[0m'),
            truecolor: show('\x1b[38;2;1;2;3mdark\x1b[38:2::250:251:252m light'),
            inverse: show('\x1b[7minverse\x1b[27m back'),
            controls: show('\x1b]0;window title\x07\x1b[2K\x1b[?25lshown'),
            progress: stripAnsi('10%\r50%\r\x1b[32m100%\x1b[0m'),
            markup: show('<script>alert(1)</script>'),
          };
        }"""
    )
    assert rendered["basic"] == [
        ["ansi-fg-1 ansi-bold", "", "red bold"],
        ["#text", " plain "],
        ["ansi-fg-10", "", "bright"],
    ]
    assert rendered["extended"] == [
        ["", "color: rgb(255, 0, 0);", "red"],
        ["", "color: rgb(255, 0, 0); background-color: rgb(128, 128, 128);", " on grey"],
    ]
    assert rendered["truecolor"] == [
        ["", "color: rgb(1, 2, 3);", "dark"],
        ["", "color: rgb(250, 251, 252);", " light"],
    ]
    assert rendered["inverse"] == [
        ["ansi-fg-inverse ansi-bg-inverse", "", "inverse"],
        ["#text", " back"],
    ]
    assert rendered["controls"] == [["#text", "shown"]]
    assert rendered["progress"] == "100%"
    assert rendered["markup"] == [["#text", "<script>alert(1)</script>"]]
