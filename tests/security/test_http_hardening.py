"""HTTP hardening (issue 12, item 5): each attack of the outside review, shown to fail.

In-process (the real app through its ASGI interface, with a `receive` that counts what the app
pulls of a body) where that shows the behaviour; against a real `conveyor server` on 127.0.0.1
where it needs the real socket: memory while a 300 MB body arrives, slow connections, what
uvicorn makes of X-Forwarded-For. Servers are stopped by PID; waits poll with a deadline. The
harness for both is tests/security/http_harness.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor import jsonio
from conveyor.errors import ConveyorError
from conveyor.forges.github import sign_github
from conveyor.server.app import ServerConfig
from conveyor.server.limits import BodyLimits
from conveyor.server.listen import RateLimit
from conveyor.server.tokens import create_token
from conveyor.server.web_ui import safe_next
from conveyor.spec import PipelineError, parse_pipeline
from conveyor.store.db import Settings, open_store
from tests.conftest import GitRepo
from tests.security.http_harness import (
    MIB,
    Live,
    Server,
    megabytes,
    register,
    rss_mib,
    serve,
    stream_body,
)
from tests.serverproc import clean_env, conveyor_argv, until

STATIC = Path(__file__).parents[2] / "src" / "conveyor" / "web" / "static"
TRACEBACK = "Traceback (most recent call last)"
DEEP = b"[" * 200_000 + b"]" * 200_000


# Every route that needs a token and takes a body: FastAPI's parsed JSON bodies and the
# routes that read their own (Alertmanager, imports, artifact uploads, runner reports).
TOKEN_ROUTES = [
    ("POST", "/api/v1/runs"),
    ("POST", "/api/v1/services"),
    ("POST", "/api/v1/hooks/alertmanager"),
    ("POST", "/api/v1/import"),
    ("PUT", "/api/v1/artifacts/sha256:" + "0" * 64),
    ("POST", "/api/v1/jobs/1/reports"),
    ("POST", "/api/v1/runners/lease"),
]


def test_a_body_without_a_token_is_answered_401_before_a_byte_is_read(tmp_path: Path) -> None:
    """The review's 300 MB without a token: 1 GB of RSS before the 401. Now no route that
    needs a token pulls a byte of a large body before the token is checked."""

    async def body(live: Live) -> None:
        for method, path in TOKEN_ROUTES:
            for declare in (True, False):  # Content-Length, and chunked (length unknown)
                r = await live.send(method, path, chunks=megabytes(30), declare=declare)
                where = f"{method} {path} ({'declared' if declare else 'chunked'})"
                assert r.status == 401, (where, r.body)
                assert r.pulled == 0, where
                assert r.headers["connection"] == "close", where
                assert r.error["code"] == "unauthorized"
            r = await live.send(method, path, chunks=megabytes(30), token="cvy_not-a-token")
            assert (r.status, r.pulled) == (401, 0), path

    serve(tmp_path, body)


def test_bodies_over_each_kind_of_limit_get_413_as_json_and_runner_uploads_still_work(
    tmp_path: Path,
) -> None:
    async def body(live: Live) -> None:
        # Declared too large: refused before reading; chunked: once the limit is passed.
        r = await live.send("POST", "/api/v1/runs", chunks=megabytes(30), token=live.admin)
        assert (r.status, r.pulled) == (413, 0)
        assert r.error["code"] == "too_large"
        assert "larger than 1MiB (1048576 bytes)" in r.error["message"]
        assert r.headers["connection"] == "close"
        r = await live.send(
            "POST", "/api/v1/runs", chunks=megabytes(30), token=live.admin, declare=False
        )
        assert r.status == 413
        assert r.pulled == 2  # the first MiB fits; the second passes the limit

        # A runner's artifact (3 MiB, past the API limit) and report batch still go through.
        blob = os.urandom(3 * MIB)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        r = await live.send(
            "PUT",
            f"/api/v1/artifacts/{digest}",
            chunks=[blob[i : i + MIB] for i in range(0, len(blob), MIB)],
            headers={"content-type": "application/octet-stream"},
            token=live.runner,
        )
        assert r.status == 201, r.body
        reports = {"token": 1, "reports": [{"seq": 1, "kind": "log", "lines": ["x" * 900] * 3000}]}
        r = await live.send(
            "POST",
            "/api/v1/jobs/99/reports",
            chunks=[json.dumps(reports).encode()],
            token=live.runner,
        )
        assert r.status == 404, r.body  # read and parsed: there is no job 99

        # Operator's limits: a 2 KiB API limit.
        state = live.app.state.conveyor
        state.config = dataclasses.replace(live.config, body_limits=BodyLimits(api=2048))
        r = await live.send(
            "POST", "/api/v1/runs", chunks=[b"{" + b" " * 4000 + b"}"], token=live.admin
        )
        assert r.status == 413
        assert (
            "larger than 2KiB (2048 bytes), this server's limit for API requests"
            in (r.error["message"])
        )
        state.config = live.config

    serve(tmp_path, body)


def test_a_forge_webhook_without_a_signature_is_refused_unread_and_alike_for_any_service(
    tmp_path: Path, repo: GitRepo
) -> None:
    async def body(live: Live) -> None:
        secret = await register(live, repo)
        unsigned = {"x-github-event": "push"}
        for service in ("svc", "no-such-service"):
            r = await live.send(
                "POST",
                f"/api/v1/hooks/github/{service}",
                chunks=megabytes(20),
                headers=unsigned,
                declare=False,
            )
            assert (r.status, r.pulled) == (401, 0), (service, r.body)
        known = r.error
        # With a signature, the body must be read to check it: a wrong one is 401 after.
        data = b"{" + b" " * (2 * MIB) + b"}"
        signed = unsigned | {"x-hub-signature-256": sign_github("wrong", data)}
        r = await live.send("POST", "/api/v1/hooks/github/svc", chunks=[data], headers=signed)
        assert r.status == 401
        assert r.pulled == 1
        assert r.error == known  # the same answer: it tells nobody which services exist
        right = unsigned | {"x-hub-signature-256": sign_github(secret, data)}
        r = await live.send("POST", "/api/v1/hooks/github/svc", chunks=[data], headers=right)
        assert r.status == 400  # accepted as signed, then not a push (no ref)

    serve(tmp_path, body)


def test_unauthenticated_bodies_share_one_budget(tmp_path: Path, repo: GitRepo) -> None:
    """Forge webhooks are read before their signature is checked: many at once could add
    up past any one request's limit, so together they get a budget."""
    config = ServerConfig(
        runner_slots=0,
        delivery=False,
        body_limits=BodyLimits(unauthenticated=3 * MIB),
    )

    async def body(live: Live) -> None:
        await register(live, repo)
        data = b"{" + b" " * (4 * MIB) + b"}"
        headers = {"x-github-event": "push", "x-hub-signature-256": sign_github("x", data)}
        r = await live.send(
            "POST",
            "/api/v1/hooks/github/svc",
            chunks=[data[:MIB]] * 4,
            headers=headers,
            declare=False,
        )
        assert r.status == 503, r.body
        assert r.headers["retry-after"] == "1"
        assert r.pulled == 4
        # Released when the request ended: a smaller one fits again.
        small = data[: 2 * MIB]
        r = await live.send(
            "POST",
            "/api/v1/hooks/github/svc",
            chunks=[small],
            headers={**headers, "x-hub-signature-256": sign_github("x", small)},
        )
        assert r.status == 401

    serve(tmp_path, body, config)


def test_deep_json_is_a_400_on_every_intake_and_never_a_traceback(
    tmp_path: Path, repo: GitRepo, caplog: pytest.LogCaptureFixture
) -> None:
    """The review's 200,000-deep array to /hooks/alertmanager was a 500 (RecursionError)."""
    nested_70 = json.dumps({"version": "4", "alerts": [json.loads("[" * 70 + "]" * 70)]})

    async def body(live: Live) -> None:
        secret = await register(live, repo)
        for data in (DEEP, nested_70.encode()):
            r = await live.send(
                "POST", "/api/v1/hooks/alertmanager", chunks=[data], token=live.admin
            )
            assert r.status == 400, r.body
            assert r.error == {
                "code": "bad_payload",
                "message": "the body is refused: the JSON is nested more than 64 levels deep",
            }
        headers = {"x-github-event": "push", "x-hub-signature-256": sign_github(secret, DEEP)}
        r = await live.send("POST", "/api/v1/hooks/github/svc", chunks=[DEEP], headers=headers)
        assert r.status == 400
        assert r.error["message"] == (
            "body is not valid JSON: the JSON is nested more than 64 levels deep"
        )
        for path in ("/api/v1/services", "/api/v1/runs", "/api/v1/session"):
            r = await live.send(
                "POST", path, chunks=[DEEP], token=live.admin, headers={"x-conveyor-csrf": "1"}
            )
            assert r.status == 400, (path, r.body)
            assert r.error["message"] == "the JSON body is nested too deeply to be read"
        r = await live.send(
            "POST",
            "/api/v1/import",
            chunks=[DEEP + b"\n"],
            token=live.admin,
            headers={"content-type": "application/x-ndjson"},
        )
        assert r.status == 400
        assert r.error["errors"] == [
            "line 1: not accepted: the JSON is nested more than 64 levels deep"
        ]

    with caplog.at_level(logging.WARNING):
        serve(tmp_path, body)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_jsonio_loads_refuses_deep_nesting_without_recursion() -> None:
    assert jsonio.loads('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    assert jsonio.loads("[" * 64 + "]" * 64) is not None
    for text in ("[" * 65 + "]" * 65, "[" * 100_000 + "]" * 100_000):
        with pytest.raises(jsonio.TooDeep, match="nested more than 64 levels"):
            jsonio.loads(text)
    # Many brackets, little depth: walked, accepted.
    assert len(jsonio.loads(json.dumps([[i] for i in range(10_000)]))) == 10_000


# --- sign-in redirect ---------------------------------------------------------------------------

# (what `next=` decodes to, where sign-in may go): the server and the page's script agree.
NEXT_CASES = [
    ("/", "/"),
    ("/runs/12", "/runs/12"),
    ("/runs/12?job=build#L30", "/runs/12?job=build#L30"),
    ("/services/shop/environments/production", "/services/shop/environments/production"),
    ("/services/a%2Fb/environments/x", "/services/a%2Fb/environments/x"),
    ("/\t/evil.example", "/"),  # the review's /%09/host: browsers drop the tab → //host
    ("/%09/evil.example", "/"),  # the same, encoded twice
    ("/\r\n/evil.example", "/"),
    ("//evil.example", "/"),
    ("/\\evil.example", "/"),
    ("/%5Cevil.example", "/"),
    ("/%2F/evil.example", "/"),
    ("https://evil.example/", "/"),
    ("javascript:alert(1)", "/"),
    ("java\nscript:alert(1)", "/"),
    (" /runs/1", "/"),
    ("/runs/1 x", "/"),
    ("/\u2028evil", "/"),
    ("/\ufeff/evil.example", "/"),
    ("/%zz", "/"),
    ("/%ff", "/"),
    ("/signin", "/"),
    ("/signin?next=/runs/1", "/"),
    ("", "/"),
]


@pytest.mark.parametrize(("given", "expected"), NEXT_CASES)
def test_sign_in_goes_only_to_paths_on_this_site(given: str, expected: str) -> None:
    assert safe_next(given) == expected


def test_the_page_script_agrees_with_the_server_on_next() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node to run the page's module")
    program = (
        f"import {{safeNext, httpHref}} from {json.dumps(str(STATIC / 'lib' / 'urls.js'))};\n"
        "const cases = JSON.parse(process.argv[1]);\n"
        "console.log(JSON.stringify({\n"
        "  next: cases.next.map((v) => safeNext(v, 'http://conveyor.test')),\n"
        "  href: cases.href.map((v) => httpHref(v)),\n"
        "}));\n"
    )
    hrefs = [
        "https://shop.example/",
        "http://127.0.0.1:8080/x",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "/relative",
        "ftp://files.example/",
    ]
    cases = {"next": [g for g, _ in NEXT_CASES], "href": hrefs}
    out = subprocess.run(
        [node, "--input-type=module", "-e", program, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    seen = json.loads(out.stdout)
    assert seen["next"] == [e for _, e in NEXT_CASES]
    assert seen["href"] == [
        "https://shop.example/",
        "http://127.0.0.1:8080/x",
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ]


def test_the_sign_in_page_is_never_served_with_an_off_site_next(tmp_path: Path) -> None:
    async def body(live: Live) -> None:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=live.app), base_url="http://conveyor"
        )
        async with client:
            for query in ("/%09/evil.example", "//evil.example", "https:%2F%2Fevil.example"):
                r = await client.get(f"/signin?next={query}")
                assert r.status_code == 303, query
                assert r.headers["location"] == "/signin"
            r = await client.get("/signin?next=%2Fruns%2F3")
            assert r.status_code == 200

    serve(tmp_path, body)


# --- URLs in pipeline files -----------------------------------------------------------------

PIPELINE = """\
service: shop
jobs:
  build:
    run: make
environments:
  production:
    deploy:
      target: command
      deploy: ./deploy.sh
      url: {url}
"""


def test_an_environment_url_that_is_not_http_is_refused_naming_its_line() -> None:
    for url in ("javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,x", "/relative"):
        with pytest.raises(PipelineError) as caught:
            parse_pipeline(PIPELINE.format(url=json.dumps(url)))
        [problem] = caught.value.problems
        assert (problem.line, problem.path) == (10, "environments.production.deploy.url")
        assert problem.message.startswith("must be an http:// or https:// URL, got ")
    good = parse_pipeline(PIPELINE.format(url="https://shop.example"))
    assert good.environments["production"].deploy.options["url"] == "https://shop.example"


def test_conveyor_validate_names_the_line_of_a_javascript_url(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.yml"
    path.write_text(PIPELINE.format(url="javascript:alert(1)"))
    out = subprocess.run(
        conveyor_argv("validate", str(path)),
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert f"{path}:10:12: environments.production.deploy.url: must be an http:// or " in (
        out.stdout + out.stderr
    )
    assert TRACEBACK not in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("fragment", "where"),
    [
        ("notify: [{webhook: {url: 'javascript:alert(1)'}}]", "notify[0].webhook.url"),
        ("notify: [{slack: {webhook: 'file:///etc/passwd'}}]", "notify[0].slack.webhook"),
        ("notify: [{email: {to: a@b.example, smtp: 'http://mail'}}]", "notify[0].email.smtp"),
        ("on: {poll: {url: 'ext::sh -c x', interval: 1m, branches: main}}", "on.poll.url"),
    ],
)
def test_every_url_field_of_a_pipeline_has_its_scheme_checked(fragment: str, where: str) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(f"service: shop\njobs: {{build: {{run: make}}}}\n{fragment}\n")
    assert [p.path for p in caught.value.problems] == [where]


def test_url_fields_accept_what_they_should() -> None:
    parse_pipeline(
        "service: shop\njobs: {build: {run: make}}\n"
        "on: {poll: {url: 'git@github.com:acme/shop.git', interval: 1m, branches: main}}\n"
        "notify:\n"
        "  - slack: {webhook: '${{ secrets.SLACK_WEBHOOK }}'}\n"
        "  - webhook: {url: 'https://${{ secrets.HOOK_HOST }}/conveyor'}\n"
        "  - email: {to: a@b.example, smtp: 'smtps://mail.example:465'}\n"
    )


# --- files: the data directory and the database ---------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_directory_and_database_are_private(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))
    try:
        create_token(store, "t", ["read"])  # a write: the -wal and -shm files exist now
        assert mode(home) == 0o700
        for name in ("conveyor.db", "conveyor.db-wal", "conveyor.db-shm"):
            assert mode(home / name) == 0o600, name
    finally:
        store.close()


def test_an_existing_loose_data_directory_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))
    create_token(store, "t", ["read"])
    store.close()
    home.chmod(0o755)
    (home / "conveyor.db").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="conveyor.store"):
        store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}"))
        store.close()
    assert mode(home) == 0o700
    assert mode(home / "conveyor.db") == 0o600
    said = [r.getMessage() for r in caplog.records]
    assert (
        f"the data directory {home} was open to other users (mode 755): now 700, for " in (said[0])
    )
    assert any("database file" in s and "(mode 644): now 600" in s for s in said)
    # Never wider than it was: a read-only directory stays read-only.
    home.chmod(0o555)
    try:
        with contextlib.suppress(ConveyorError):  # not root: SQLite cannot write there
            open_store(
                Settings(home=home, database_url=f"sqlite:///{home / 'conveyor.db'}")
            ).close()
        assert mode(home) == 0o500
    finally:
        home.chmod(0o700)


# --- logging --------------------------------------------------------------------------------


def test_a_flood_of_one_message_is_logged_a_few_times_and_counted() -> None:
    limiter = RateLimit(interval=3600, burst=3)
    logger = logging.getLogger("tests.security.flood")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(limiter)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for _ in range(10_000):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logger.error("socket.accept() out of system resource", exc_info=True)
        assert len(records) == 3
        assert all(r.exc_info is None for r in records)  # one line each, no traceback
        assert records[0].getMessage() == (
            "socket.accept() out of system resource: [Errno 24] Too many open files"
        )
        limiter.interval = 0  # the window is over: the next one says what was dropped
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            logger.error("socket.accept() out of system resource", exc_info=True)
        assert records[-1].getMessage().endswith("[and 9997 more like it, not shown]")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


# --- a real server --------------------------------------------------------------------------


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*options: str, name: str = "home", prefix: tuple[str, ...] = ()) -> Server:
        server = Server(tmp_path / name, *options, prefix=prefix)
        server.admin = server.token("admin", "admin")
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.mark.integration
def test_a_300_mb_body_without_a_token_does_not_grow_the_server(
    servers: Callable[..., Server],
) -> None:
    server = servers()
    idle = rss_mib(server.pid)
    peak = idle

    def watch() -> None:
        nonlocal peak
        peak = max(peak, rss_mib(server.pid))

    total = 300 * 10**6
    for path, extra in [
        ("/api/v1/runs", ""),
        ("/api/v1/hooks/alertmanager", ""),
        ("/api/v1/import", ""),
        ("/api/v1/runs", "Transfer-Encoding: chunked\r\n"),  # a lie: '[' is no chunk size
        ("/api/v1/runs", f"Authorization: Bearer {server.admin}\r\n"),  # with a token: 413
    ]:
        length = "" if "chunked" in extra else f"Content-Length: {total}\r\n"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{extra}{length}\r\n"
        ).encode()
        sent, answer = stream_body(server.port, head, total, watch)
        status = answer.split(b" ", 2)[1] if answer else b"none"
        assert status in (b"401", b"413", b"400"), (path, extra, answer[:200])
        assert b"connection: close" in answer.lower(), answer[:300]
        assert sent < 50 * MIB, (path, sent)  # the server answered, then stopped reading
    assert peak - idle < 60, f"RSS grew from {idle:.0f} to {peak:.0f} MiB"
    assert httpx.get(f"{server.url}/api/v1/health", timeout=5).status_code == 200


@pytest.mark.integration
def test_slow_connections_are_closed_capped_and_leave_room_and_a_quiet_log(
    servers: Callable[..., Server],
) -> None:
    """The review's 20,000 slow connections used up the file descriptors and logged 186 MB
    of tracebacks. 300 half-sent requests now leave the server answering, are closed after
    the header timeout, and connections past the cap are refused at once."""
    server = servers("--header-timeout", "3", "--max-connections", "340")
    slow: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(sock)
        began = time.monotonic()
        r = httpx.get(f"{server.url}/api/v1/health", timeout=5)
        assert r.status_code == 200
        assert time.monotonic() - began < 2
        # Past the cap (340, with the 300 above): refused at once with a 503.
        extra: list[socket.socket] = []
        for _ in range(60):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            extra.append(sock)
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        slow += extra
        refused = 0
        waiting = set(extra)
        deadline = time.monotonic() + 2  # well within the header timeout
        while waiting and time.monotonic() < deadline:
            ready, _, _ = select.select(list(waiting), [], [], 0.2)
            for sock in ready:
                waiting.discard(sock)
                with contextlib.suppress(OSError):
                    refused += sock.recv(100).startswith(b"HTTP/1.1 503")
        assert 15 <= refused <= 25, refused  # ~20; each refused one is closed at once
        # Within the header timeout (and a margin), every slow one has been answered 408.
        deadline = time.monotonic() + 10
        timed_out = 0
        for sock in slow[:300]:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(OSError):
                if sock.recv(100).startswith(b"HTTP/1.1 408"):
                    timed_out += 1
        assert timed_out == 300
        assert httpx.get(f"{server.url}/api/v1/health", timeout=5).status_code == 200
    finally:
        for sock in slow:
            sock.close()
    log = server.log()
    assert TRACEBACK not in log
    assert len(log.splitlines()) < 20, log
    refusals = log.count("refusing connections")
    assert 1 <= refusals <= 5, log


@pytest.mark.integration
def test_a_low_open_file_limit_lowers_the_connection_cap_instead_of_running_out(
    servers: Callable[..., Server],
) -> None:
    """Out of file descriptors, asyncio logged a traceback per failed accept. The cap now fits
    the process's open-file limit, so connections are refused before descriptors run out."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        pytest.skip("util-linux's prlimit is not installed")
    server = servers("--header-timeout", "2", prefix=(prlimit, "--nofile=400:400", "--"))
    assert "open-file limit 400 leaves room for 144 connections, not 1000" in server.log()
    held: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            held.append(sock)
        # Refused ones are closed at once; the others, after the header timeout: then the
        # server answers again.
        until(lambda: _health(server.url) == 200, 15, "the server to answer after the slow ones")
    finally:
        for sock in held:
            sock.close()
    log = server.log()
    assert TRACEBACK not in log
    assert "Too many open files" not in log
    assert 1 <= log.count("refusing connections") <= 5, log  # 156 refused, a few lines said


def _health(url: str) -> int:
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=2).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.integration
def test_oversized_headers_are_refused_and_a_large_body_is_not_taken_for_headers(
    servers: Callable[..., Server],
) -> None:
    server = servers()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000)
        assert sock.recv(100).startswith(b"HTTP/1.1 431")
    # A 150 kB body sent in one piece, then a second request on the same connection.
    body = json.dumps({"token": "cvy_" + "x" * 150_000}).encode()
    first = (
        b"POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Conveyor-CSRF: 1\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for request, status in [
            (first, b"HTTP/1.1 422"),  # answered (the token is too long), not taken for headers
            (b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200"),
        ]:
            sock.sendall(request)
            answer = _read_response(sock)
            assert answer.startswith(status), answer[:200]


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response with a Content-Length, however the kernel splits it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {data[:200]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside the body"
        body += chunk
    assert len(body) == length, "more than one response arrived"
    return head + b"\r\n\r\n" + body


@pytest.mark.integration
def test_x_forwarded_for_does_not_reset_the_sign_in_throttle(
    servers: Callable[..., Server],
) -> None:
    def sign_in(url: str, address: str) -> int:
        r = httpx.post(
            f"{url}/api/v1/session",
            json={"token": "cvy_guess"},
            headers={"X-Conveyor-CSRF": "1", "X-Forwarded-For": address},
            timeout=5,
        )
        return r.status_code

    server = servers()
    codes = [sign_in(server.url, f"203.0.113.{n}") for n in range(12)]
    assert codes == [401] * 10 + [429] * 2  # one address, 127.0.0.1, whatever the header says

    # Behind a proxy the operator names, the forwarded address is the client's.
    proxied = servers("--forwarded-allow-ips", "127.0.0.1", name="proxied")
    codes = [sign_in(proxied.url, f"203.0.113.{n}") for n in range(12)]
    assert codes == [401] * 12
    assert "X-Forwarded-For believed from 127.0.0.1 only" in proxied.log()


@pytest.mark.integration
def test_the_server_keeps_its_data_directory_private(servers: Callable[..., Server]) -> None:
    server = servers()
    assert server.api("GET", "/me").status_code == 200
    assert mode(server.home) == 0o700
    for name in ("conveyor.db", "conveyor.db-wal", "conveyor.db-shm"):
        assert mode(server.home / name) == 0o600, name


def test_the_listener_options_are_checked() -> None:
    out = subprocess.run(
        conveyor_argv("server", "--forwarded-allow-ips", "proxy.example", "--port", "1"),
        env=clean_env(CONVEYOR_HOME=os.devnull),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "'proxy.example' is not an IP address or network" in out.stderr
    out = subprocess.run(
        conveyor_argv("server", "--body-limit", "everything=1MB"),
        env=clean_env(CONVEYOR_HOME=os.devnull),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "give KIND=SIZE with KIND one of api, webhook" in out.stderr
    assert TRACEBACK not in out.stderr
    assert sys.executable  # the same interpreter runs the CLI (conveyor_argv)
