"""Smoke tests against a deployed release: python3 smoke/smoke_test.py BASE_URL."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def get(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            body: dict[str, object] = json.load(response)
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise SystemExit(f"FAIL GET {url}: HTTP {exc.code} {detail}") from None
    except (OSError, ValueError) as exc:
        raise SystemExit(f"FAIL GET {url}: {exc}") from None


def main(base: str) -> None:
    base = base.rstrip("/")
    health = get(f"{base}/healthz")
    if health.get("status") != "ok":
        raise SystemExit(f"FAIL /healthz says {health}")
    print(f"ok   GET {base}/healthz -> {health}")
    page = get(f"{base}/")
    if "from" not in str(page.get("message")):
        raise SystemExit(f"FAIL / says {page}")
    print(f"ok   GET {base}/ -> {page['message']} ({page.get('version')})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: smoke_test.py BASE_URL")
    main(sys.argv[1])
