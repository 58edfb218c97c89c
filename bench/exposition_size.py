"""The size of `/metrics` before anything happens, for a large installation: SERVICES services
with ENVIRONMENTS environments each (registered, with their environments), scraped once by
the real collector (conveyor.metrics.exposition.StoreCollector) and rendered as Prometheus
text. Every counter and histogram of each service and environment is exported at 0 from the
start (issue 15), so this is what a Prometheus stores before the first deployment.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SERVICES = 200
ENVIRONMENTS = (
    ("staging", "staging"),
    ("production", "production"),
    ("production-eu", "production"),
)


def measure() -> dict[str, Any]:
    from prometheus_client import CollectorRegistry, generate_latest

    from conveyor.metrics.exposition import StoreCollector
    from conveyor.store.db import Settings, open_store
    from conveyor.store.models import EnvironmentState, Service

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))
        try:
            with store.write() as w:
                for i in range(SERVICES):
                    service = Service(name=f"service-{i:03d}", repository=f"/srv/{i}")
                    w.session.add(service)
                    w.session.flush()
                    for name, tier in ENVIRONMENTS:
                        w.session.add(EnvironmentState(service_id=service.id, name=name, tier=tier))
            registry = CollectorRegistry()
            registry.register(StoreCollector(store, cache_seconds=0))
            started = time.perf_counter()
            text = generate_latest(registry)
            seconds = time.perf_counter() - started
        finally:
            store.close()
    lines = [line for line in text.decode().splitlines() if line and not line.startswith("#")]
    by_family: dict[str, int] = {}
    for line in lines:
        name = line.split("{", 1)[0].split(" ", 1)[0]
        for suffix in ("_bucket", "_sum", "_count", "_total", "_created"):
            name = name.removesuffix(suffix)
        by_family[name] = by_family.get(name, 0) + 1
    return {
        "services": SERVICES,
        "environments": len(ENVIRONMENTS),
        "series": len(lines),
        "bytes": len(text),
        "scrape_ms": round(seconds * 1000, 1),
        "by_family": dict(sorted(by_family.items(), key=lambda kv: -kv[1])),
    }


def section(r: dict[str, Any]) -> str:
    top = "\n".join(f"| `{name}` | {n:,} |" for name, n in list(r["by_family"].items())[:8])
    size = f"{r['services']} services × {r['environments']} environments"
    return f"""## `/metrics` before any event ({size})

Every counter and histogram of each service and environment the store knows is exported at 0
from the start (so Prometheus's `increase()` sees the first event). One scrape of a store with
{r["services"]} registered services of {r["environments"]} environments each, through the real
collector, rendered as Prometheus text: **{r["series"]:,} series, {r["bytes"] / 1e6:.1f} MB**
({r["scrape_ms"]} ms to collect and render). Histograms carry only service and environment
labels; how a run, job or deployment ended and how an approval was decided are on counters
(with per-status histograms the same store exported about 138,000 series, 15.6 MB).

| family | series |
|---|---|
{top}
"""


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    result = measure()
    json.dump(result, sys.stdout, indent=2)
    print()
    if os.environ.get("SECTION"):
        print(section(result))
