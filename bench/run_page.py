"""The run page with a long log: time to usable and DOM size, in the machine's Chromium.

A real `conveyor server` with its built-in runner runs a one-step pipeline whose step prints
N lines (awk); then a fresh browser page, signed in, opens the run page. Measured from the
navigation's start, median of REPEATS page loads each:
- first lines: the first log line is on screen (the reader can read and scroll);
- whole log: the page says "Log complete" (every line is in, search covers all of them);
- DOM: elements on the page once the whole log is in, and log rows among them.
Target (issue 16, item 3): a 100,000-line log usable within 1 s, the DOM bounded. Before the
blocks (issue 16's review, one DOM row per line): 4.9 s and 40,000 elements for 10,000 lines.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))

from playwright.sync_api import Page, expect, sync_playwright
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, Web, signed_in

SIZES = (10_000, 100_000)
REPEATS = 5


def _pipeline(lines: int) -> str:
    return (
        "service: long\njobs:\n  build:\n    run: awk 'BEGIN { for (i = 1; i <= "
        f'{lines}; i++) printf "compiling unit %06d ok\\n", i }}\'\n'
    )


def _load(page: Page, url: str, lines: int) -> dict[str, float]:
    started = time.perf_counter()
    page.goto(url)
    expect(page.locator(".log-line").first).to_be_visible(timeout=60_000)
    first = time.perf_counter() - started
    expect(page.locator(".log-stream-state")).to_contain_text(
        f"Log complete · {lines} lines", timeout=120_000
    )
    whole = time.perf_counter() - started
    elements = page.evaluate("document.getElementsByTagName('*').length")
    rows = page.locator(".log-line").count()
    return {"first_s": first, "whole_s": whole, "elements": elements, "rows": rows}


def measure(repeats: int = REPEATS) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        web = Web(Path(tmp))
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for lines in SIZES:
                name = f"long{lines}"
                web.service(name, {"conveyor.yml": _pipeline(lines).replace("long", name, 1)})
                run = web.trigger(name)["id"]
                assert web.wait_run(run, 120)["status"] == "succeeded"
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                signed_in(page, web, web.admin_token, next="/")
                samples = [_load(page, f"{web.url}/runs/{run}", lines) for _ in range(repeats)]
                context.close()
                out[str(lines)] = {
                    "first_lines_s": round(statistics.median(s["first_s"] for s in samples), 3),
                    "whole_log_s": round(statistics.median(s["whole_s"] for s in samples), 3),
                    "elements": max(s["elements"] for s in samples),
                    "log_rows": max(s["rows"] for s in samples),
                }
        finally:
            browser.close()
            web.close()
    out["load"] = os.getloadavg()[0]
    return out


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
