"""What every connector shares: its options, the HTTP client it pulls with, and what a pull
returns.

A connector reads one tool's API (GitHub, GitLab, Argo CD, PagerDuty, Opsgenie) and turns what
it finds into the native records of a history import (``{"kind": "deployment", ...}`` and
``{"kind": "incident", ...}``, docs/import.md); connectors.sync hands them to the one importer
(metrics.imports), which is idempotent by id. A pull starts from the connector's cursor (what
the previous pull got up to) and returns the next one, so each sync asks only for what is new;
a record pulled twice is simply "already present".

A connector is an extension of kind ``connector`` (conveyor.extensions): built-ins are the
modules of this package, plug-ins register under the entry-point group ``conveyor.connectors``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import httpx
from pydantic import Field

from conveyor import jsonio
from conveyor.errors import ConveyorError
from conveyor.extensions import Extension, Kind, Options

# Pages read at most in one pull: a first sync of a long history goes on at the next one.
MAX_PAGES = 50
TIMEOUT_SECONDS = 30.0
# Objects asked for a page where a list is paged by offset (PagerDuty's and Opsgenie's most).
OFFSET_PAGE = 100
# A response larger than this is refused (a tool's page is a few hundred kilobytes).
MAX_RESPONSE_BYTES = 20 * 1024 * 1024
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')

Name = Annotated[str, Field(min_length=1, max_length=200)]


class ConnectorError(ConveyorError):
    """A pull that failed (the tool refused, or answered what it documents no way): nothing of
    it is imported and the cursor stays where it was."""


class ConnectorOptions(Options):
    """What every connector is told, besides its own options."""

    token_secret: Name | None = Field(
        None,
        description="the name of the connector's secret holding its API token "
        "(`conveyor connectors secret NAME SECRET`)",
    )
    environments: dict[str, Name] = Field(
        default_factory=dict,
        description="the tool's environment names mapped to Conveyor's; when given, "
        "deployments to any other environment are skipped",
    )


@dataclass
class Pull:
    """What one pull found: native import records, and the cursor to start from next time."""

    records: list[dict[str, Any]] = field(default_factory=list)
    cursor: dict[str, Any] = field(default_factory=dict)
    skipped: int = 0

    def environment(self, options: ConnectorOptions, name: str) -> str | None:
        """Conveyor's environment for the tool's ``name``; None (and counted) if skipped."""
        if not options.environments:
            return name
        mapped = options.environments.get(name)
        if mapped is None:
            self.skipped += 1
        return mapped


class PullFunction(Protocol):
    def __call__(self, api: Api, options: Any, cursor: Mapping[str, Any], /) -> Pull: ...


class ApiFunction(Protocol):
    def __call__(self, options: Any, token: str | None, /) -> Api: ...


@dataclass(frozen=True)
class Source:
    """A connector's implementation: the client of its tool's API (given the options and the
    token), and the pull from a cursor."""

    api: ApiFunction
    pull: PullFunction


def connector(
    name: str,
    options: type[ConnectorOptions],
    api: ApiFunction,
    pull: PullFunction,
    summary: str,
    order: int,
) -> Extension:
    return Extension(Kind.CONNECTOR, name, options, Source(api, pull), summary, order=order)


class Api:
    """A tool's HTTP API: JSON GETs with its authentication, errors as ConnectorError naming
    the request, and its documented ways of paging."""

    def __init__(self, base_url: str, headers: Mapping[str, str]) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(
            headers={"Accept": "application/json", **headers},
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
        )
        self.requests = 0

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> tuple[Any, httpx.Response]:
        """The JSON of GET ``path`` and its response; a ConnectorError for anything else."""
        url = self.url(path)
        self.requests += 1
        try:
            response = self.client.get(url, params=dict(params) if params else None)
        except httpx.HTTPError as exc:
            raise ConnectorError(f"GET {url}: {exc or type(exc).__name__}") from None
        shown = f"GET {response.request.url}"
        if response.status_code in (401, 403):
            raise ConnectorError(
                f"{shown}: refused ({response.status_code})",
                hint="check the connector's token secret and its permissions",
            )
        if response.status_code >= 300:
            raise ConnectorError(f"{shown}: HTTP {response.status_code}: {response.text[:300]}")
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise ConnectorError(f"{shown}: the response is larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            return jsonio.loads(response.content), response
        except (ValueError, jsonio.TooDeep) as exc:
            raise ConnectorError(f"{shown}: not JSON ({exc})") from None

    def link_pages(self, path: str, params: Mapping[str, Any]) -> Iterator[Any]:
        """Each page of a list paged by ``Link: <...>; rel="next"`` (GitHub)."""
        url: str | None = path
        query: Mapping[str, Any] | None = params
        for _ in range(MAX_PAGES):
            if url is None:
                return
            data, response = self.get(url, query)
            yield data
            found = _LINK_NEXT.search(response.headers.get("link", ""))
            if found and not found.group(1).startswith(self.base_url + "/"):
                # The token goes with every request: never to another server.
                raise ConnectorError(f"GET {url}: the next page is elsewhere ({found.group(1)})")
            url, query = (found.group(1), None) if found else (None, None)

    def next_page_header(self, path: str, params: Mapping[str, Any]) -> Iterator[Any]:
        """Each page of a list paged by ``X-Next-Page`` (GitLab: empty on the last page)."""
        page = "1"
        for _ in range(MAX_PAGES):
            data, response = self.get(path, {**params, "page": page})
            yield data
            page = response.headers.get("x-next-page", "").strip()
            if not page:
                return

    def offset_items(
        self, path: str, params: Mapping[str, Any], key: str, what: str, more: Callable[[Any], bool]
    ) -> Iterator[dict[str, Any]]:
        """Each object (``data[key]``) of a list paged by ``offset`` and ``limit``, OFFSET_PAGE
        a page; ``more`` tells from a page whether another follows (PagerDuty's ``more``,
        Opsgenie's ``paging.next``)."""
        offset = 0
        for _ in range(MAX_PAGES):
            data = self.get(path, {**params, "limit": OFFSET_PAGE, "offset": offset})[0]
            yield from items(data, key, what)
            if not more(data):
                return
            offset += OFFSET_PAGE


# --- what the tools answer ---------------------------------------------------------------------


def items(data: Any, key: str | None, what: str) -> list[dict[str, Any]]:
    """The objects of a page (``data[key]``, or the page itself when ``key`` is None)."""
    found = data.get(key) if key is not None and isinstance(data, dict) else data
    if not isinstance(found, list) or not all(isinstance(x, dict) for x in found):
        raise ConnectorError(f"{what}: expected a list of objects, got {type(found).__name__}")
    return found


def time_of(value: Any, what: str) -> dt.datetime:
    """An ISO 8601 time the tool wrote (``Z`` or an offset) as an aware UTC datetime."""
    if not isinstance(value, str):
        raise ConnectorError(f"{what}: expected a time, got {value!r}")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConnectorError(f"{what}: {value!r} is not a time") from None
    if parsed.tzinfo is None:
        raise ConnectorError(f"{what}: {value!r} has no time zone")
    return parsed.astimezone(dt.UTC)


def text(time: dt.datetime) -> str:
    """A time as an import record writes it (RFC 3339, UTC)."""
    return time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def later(a: str | None, b: str | None) -> str | None:
    """The later of two record times (RFC 3339 UTC text), either may be missing."""
    if a is None or b is None:
        return a or b
    return a if time_of(a, "cursor") >= time_of(b, "cursor") else b


def raw_commits(
    api: Api,
    previous: str | None,
    sha: str,
    compare: tuple[str, Mapping[str, Any]],
    single: str,
    what: str,
    *,
    linked: bool = False,
) -> list[dict[str, Any]]:
    """The commits (as the forge writes them) a deployment of ``sha`` brought: from the
    ``compare`` request (path, params) since the environment's previous successful commit, or
    ``sha`` alone (the ``single`` commit request) for the first; none when it is the same.
    ``linked``: the compare is paged by ``Link`` headers, each page with more commits."""
    if previous == sha:
        return []
    if previous:
        pages = api.link_pages(*compare) if linked else [api.get(*compare)[0]]
        return [c for page in pages for c in items(page, "commits", f"{what} compare")]
    one = api.get(single)[0]
    if not isinstance(one, dict):
        raise ConnectorError(f"{what} commit {sha}: expected an object")
    return [one]


def deployment_record(
    service: str,
    environment: str,
    id_: str,
    sha: str,
    started: dt.datetime,
    finished: dt.datetime,
    status: str,
) -> dict[str, Any]:
    """A native deployment record (docs/import.md); it ends no earlier than it started."""
    return {
        "kind": "deployment",
        "service": service,
        "environment": environment,
        "id": id_,
        "commit": sha,
        "started_at": text(started),
        "finished_at": text(max(finished, started)),
        "status": status,
    }


def with_commits(
    record: dict[str, Any],
    shas: dict[str, str],
    commits_since: Callable[[str | None, str], list[dict[str, Any]]],
) -> dict[str, Any]:
    """A successful deployment ``record`` with the commits it brought (``commits_since(the
    environment's previous successful commit, its own)``); ``shas``, the last successful commit
    of each environment, moves on to it."""
    if record["status"] == "succeeded":
        environment, sha = record["environment"], record["commit"]
        record["commits"] = commits_since(shas.get(environment), sha)
        shas[environment] = sha
    return record


def commit(sha: str, committed_at: str, authored_at: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"sha": sha, "committed_at": committed_at}
    if authored_at is not None:
        found["authored_at"] = authored_at
    return found


@dataclass
class Incidents:
    """The incidents of one pull, and where the next pull starts: at the oldest one still open
    (asked for again until it is resolved, when the import resolves it), else at the newest one
    seen (asked for again: one opened in that same second is not lost)."""

    found: Pull
    since: str
    seen: set[str] = field(default_factory=set)
    opened: list[dt.datetime] = field(default_factory=list)
    still_open: list[dt.datetime] = field(default_factory=list)

    def add(
        self,
        service: str,
        id_: str,
        opened_at: dt.datetime,
        resolved_at: dt.datetime | None,
        environment: str | None,
        title: str | None,
    ) -> None:
        """One incident; the same one listed twice (pages shift while they are read) once."""
        if id_ in self.seen:
            return
        self.seen.add(id_)
        self.opened.append(opened_at)
        record: dict[str, Any] = {"kind": "incident", "service": service, "id": id_}
        record["opened_at"] = text(opened_at)
        if resolved_at is None:
            self.still_open.append(opened_at)
        else:
            record["resolved_at"] = text(max(resolved_at, opened_at))
        if environment is not None:
            record["environment"] = environment
        if title:
            record["title"] = title
        self.found.records.append(record)

    @classmethod
    def start(cls, cursor: Mapping[str, Any], first_days: int) -> Incidents:
        """A pull from ``cursor``: from where the previous pull left off, or ``first_days`` back
        for the first one (``since``, as the tool is asked)."""
        since = cursor.get("since") or text(first_since(first_days))
        return cls(Pull(cursor=dict(cursor)), since)

    def done(self) -> Pull:
        if self.still_open:
            self.found.cursor["since"] = text(min(self.still_open))
        elif self.opened:
            self.found.cursor["since"] = later(self.since, text(max(self.opened)))
        else:
            self.found.cursor["since"] = self.since
        return self.found


def first_since(days: int) -> dt.datetime:
    """Where a connector's first pull of incidents starts."""
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
