"""Where the CLI gets its answers: the local store (embedded), or a server when CONVEYOR_URL
is set. Both give the same dictionaries, so every command prints the same thing either way."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from conveyor import jsonio
from conveyor.errors import ConveyorError, NotFound

if TYPE_CHECKING:
    from http.client import HTTPResponse

FOLLOW_POLL_SECONDS = 0.2
REQUEST_TIMEOUT_SECONDS = 30.0
PAGE = 5000
TIME_KEYS = {
    "created_at",
    "started_at",
    "finished_at",
    "ts",
    "revoked_at",
    "since",
    "healthy_at",
    "checked_at",
    "requested_at",
    "deadline",
    "at",
    "opened_at",
    "decided_at",
    "failed_at",
    "resolved_at",
}


class Backend(Protocol):
    def list_runs(self, service: str | None, status: str | None, limit: int) -> list[Any]: ...
    def run_detail(self, run_id: int) -> dict[str, Any]: ...
    def logs(self, run_id: int, job: str | None, follow: bool) -> Iterator[dict[str, Any]]: ...
    def job_names(self, run_id: int) -> list[str]: ...
    def cancel(self, run_id: int) -> tuple[str, int]: ...
    def rerun(self, run_id: int, failed_only: bool) -> dict[str, Any]: ...
    def list_releases(self, service: str | None, limit: int) -> list[Any]: ...
    def release_detail(self, release_id: int) -> dict[str, Any]: ...
    def release_timeline(self, release_id: int) -> dict[str, Any]: ...


def backend() -> Backend:
    from conveyor.cli.common import settings

    given = settings()
    if given.url:
        return HttpBackend(given.url, given.token)
    return LocalBackend()


def remote() -> HttpBackend | None:
    """The server CONVEYOR_URL names, or None to work on the local store."""
    from conveyor.cli.common import settings

    given = settings()
    return HttpBackend(given.url, given.token) if given.url else None


class LocalBackend:
    def __init__(self) -> None:
        from conveyor.cli.common import store_for

        self.store = store_for()

    def list_runs(self, service: str | None, status: str | None, limit: int) -> list[Any]:
        from conveyor.views.runs import list_runs

        return list_runs(self.store, service=service, status=status, limit=limit)

    def run_detail(self, run_id: int) -> dict[str, Any]:
        from conveyor.views.runs import run_detail

        return run_detail(self.store, run_id)

    def job_names(self, run_id: int) -> list[str]:
        from conveyor.views.runs import run_jobs

        return list(run_jobs(self.store, run_id).values())

    def logs(self, run_id: int, job: str | None, follow: bool) -> Iterator[dict[str, Any]]:
        from conveyor.views.runs import log_page, run_jobs

        jobs = run_jobs(self.store, run_id, job)
        cursor = 0
        while True:
            lines, ended = log_page(self.store, run_id, jobs, cursor, PAGE)
            for line in lines:
                cursor = line["id"]
                yield line
            if len(lines) == PAGE:
                continue  # more lines are already waiting
            if ended or not follow:
                return
            time.sleep(FOLLOW_POLL_SECONDS)

    def cancel(self, run_id: int) -> tuple[str, int]:
        from conveyor.engine.runs import request_cancel
        from conveyor.views.runs import job_count, load_run

        with self.store.session() as session:
            load_run(session, run_id)
        previous = request_cancel(self.store, run_id, by="cli")
        return previous.value, job_count(self.store, run_id)

    def list_releases(self, service: str | None, limit: int) -> list[Any]:
        from conveyor.views.runs import list_releases

        return list_releases(self.store, service=service, limit=limit)

    def release_detail(self, release_id: int) -> dict[str, Any]:
        from conveyor.views.runs import release_detail

        return release_detail(self.store, release_id)

    def release_timeline(self, release_id: int) -> dict[str, Any]:
        from conveyor.views.timeline import release_timeline

        return release_timeline(self.store, release_id)

    def rerun(self, run_id: int, failed_only: bool) -> dict[str, Any]:
        raise ConveyorError(
            "re-running needs a server (the embedded mode runs with `conveyor run`)",
            hint="set CONVEYOR_URL, or run `conveyor run --sha <sha>` again",
        )


def _times(value: Any) -> Any:
    """Turn the API's RFC 3339 strings back into datetimes, as the local store gives them."""
    if isinstance(value, list):
        return [_times(v) for v in value]
    if isinstance(value, dict):
        return {
            k: (
                dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
                if k in TIME_KEYS and isinstance(v, str)
                else _times(v)
            )
            for k, v in value.items()
        }
    return value


def _query_value(value: Any) -> str:
    """A query parameter as the server reads it: booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class HttpBackend:
    """The server's API over the standard library's HTTP client (urllib honours the *_proxy
    variables as well): an HTTP library would cost a command a quarter of its start-up in
    imports alone. TLS (its context loads the CA bundle) is set up only for an https server."""

    def __init__(self, url: str, token: str | None) -> None:
        if not url.lower().startswith(("http://", "https://")):
            # urllib would also open file: and ftp: URLs
            raise ConveyorError(
                f"CONVEYOR_URL must be the server's http:// or https:// URL, got {url!r}",
                hint="for example CONVEYOR_URL=http://127.0.0.1:8080",
            )
        self.url = url.rstrip("/")
        self.token = token
        self.api = f"{self.url}/api/v1"

    def _open(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = REQUEST_TIMEOUT_SECONDS,
    ) -> HTTPResponse:
        """The server's response to one request, whatever its status; ConveyorError when the
        server cannot be reached."""
        import urllib.error
        import urllib.parse
        import urllib.request
        from http.client import HTTPException

        sent = dict(headers or {})
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        if json is not None:
            content = jsonio.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        query = urllib.parse.urlencode({k: _query_value(v) for k, v in (params or {}).items()})
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in __init__
            f"{self.api}{path}{'?' if query else ''}{query}",
            data=content,
            headers=sent,
            method=method,
        )
        try:
            response: HTTPResponse = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
        except urllib.error.HTTPError as refused:  # a 4xx or 5xx: its body says why
            return refused  # type: ignore[return-value]
        except (OSError, ValueError, HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise ConveyorError(
                f"cannot reach the server at {self.url}: {reason}",
                hint="is `conveyor server` running? CONVEYOR_URL names it",
            ) from None
        return response

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        from http.client import HTTPException

        with self._open(method, path, **kwargs) as response:
            try:
                body = response.read()
            except (OSError, HTTPException) as exc:
                raise ConveyorError(
                    f"the server at {self.url} stopped answering: {exc}",
                    hint="is `conveyor server` running? CONVEYOR_URL names it",
                ) from None
        if response.status >= 400:
            try:
                error = json.loads(body)["error"]
                message, hint = error["message"], error.get("hint")
            except (ValueError, KeyError, TypeError):
                message, hint = f"the server answered {response.status}", None
            if response.status in (401, 403):
                message, hint = self._refused(response.status, message)
            cls = NotFound if response.status == 404 else ConveyorError
            raise cls(message, hint=hint)
        return _times(json.loads(body)) if body else None

    def _refused(self, status: int, said: str) -> tuple[str, str]:
        """A refusal in the CLI's terms: the server speaks HTTP (Authorization: Bearer), the
        person at the CLI sets CONVEYOR_TOKEN."""
        make = (
            "run `conveyor token create NAME --scope SCOPE --user YOU` where the server's data is"
        )
        if status == 403:
            return (
                f"the server at {self.url} refused CONVEYOR_TOKEN: {said}",
                f"use a token with that scope as CONVEYOR_TOKEN ({make})",
            )
        if not self.token:
            return (
                f"the server at {self.url} needs a token: CONVEYOR_TOKEN is not set",
                f"set CONVEYOR_TOKEN to your API token ({make})",
            )
        return (
            f"the server at {self.url} refused CONVEYOR_TOKEN: {said}",
            f"set CONVEYOR_TOKEN to a token the server knows ({make})",
        )

    def list_runs(self, service: str | None, status: str | None, limit: int) -> list[Any]:
        params: dict[str, Any] = {"limit": limit}
        if service:
            params["service"] = service
        if status:
            params["status"] = status
        runs: list[Any] = self._call("GET", "/runs", params=params)
        return runs

    def run_detail(self, run_id: int) -> dict[str, Any]:
        detail: dict[str, Any] = self._call("GET", f"/runs/{run_id}")
        return detail

    def job_names(self, run_id: int) -> list[str]:
        return [j["name"] for j in self.run_detail(run_id)["jobs"]]

    def logs(self, run_id: int, job: str | None, follow: bool) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {"job": job} if job else {}
        if not follow:
            cursor = 0
            while True:
                page = self._call("GET", f"/runs/{run_id}/logs", params=params | {"after": cursor})
                yield from page["lines"]
                if not page["lines"] or page["ended"]:
                    return
                cursor = page["next"]
        self.run_detail(run_id)  # a clear error for an unknown run, before streaming
        with self._open(
            "GET", f"/runs/{run_id}/logs/stream", params=params, timeout=None
        ) as response:
            event = None
            for line in response:
                raw = line.decode().rstrip("\r\n")
                if raw.startswith("event: "):
                    event = raw.removeprefix("event: ")
                elif raw.startswith("data: ") and event == "line":
                    yield _times(json.loads(raw.removeprefix("data: ")))
                elif raw.startswith("data: ") and event == "end":
                    return

    def cancel(self, run_id: int) -> tuple[str, int]:
        answer = self._call("POST", f"/runs/{run_id}/cancel")
        return answer["was"], answer["jobs"]

    def rerun(self, run_id: int, failed_only: bool) -> dict[str, Any]:
        detail: dict[str, Any] = self._call(
            "POST", f"/runs/{run_id}/rerun", json={"failed_only": failed_only}
        )
        return detail

    def list_releases(self, service: str | None, limit: int) -> list[Any]:
        params: dict[str, Any] = {"limit": limit} | ({"service": service} if service else {})
        releases: list[Any] = self._call("GET", "/releases", params=params)
        return releases

    def release_detail(self, release_id: int) -> dict[str, Any]:
        detail: dict[str, Any] = self._call("GET", f"/releases/{release_id}")
        return detail

    def release_timeline(self, release_id: int) -> dict[str, Any]:
        timeline: dict[str, Any] = self._call("GET", f"/releases/{release_id}/timeline")
        return timeline

    def trigger(self, service: str, rev: str, ref: str | None = None) -> dict[str, Any]:
        body = {"service": service, "rev": rev} | ({"ref": ref} if ref else {})
        detail: dict[str, Any] = self._call("POST", "/runs", json=body)
        return detail
