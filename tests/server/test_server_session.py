"""Browser sessions and the web UI's server side, in-process on a real store: signing in with a
token or a password, the session cookie and its CSRF header, read-only sessions, signing out,
expiry, the live stream, and the UI's own routes."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from tests.conftest import Conveyor, GitRepo
from tests.server.conftest import API, BASE_URL, Api, Serve, StreamingASGITransport, until

from conveyor.engine.approvals import add_user
from conveyor.engine.credentials import check_password, hash_password, set_credentials
from conveyor.server.session import COOKIE
from conveyor.server.tokens import revoke_token
from conveyor.store.models import Event, User, WebSession

CSRF = {"X-Conveyor-CSRF": "1"}


def set_cookie(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    """The session cookie's value and its attributes, from Set-Cookie."""
    jar: SimpleCookie = SimpleCookie()
    jar.load(response.headers["set-cookie"])
    morsel = jar[COOKIE]
    return morsel.value, {k: v for k, v in morsel.items() if v}


async def sign_in(api: Api, **body: str) -> httpx.Response:
    api.client.cookies.clear()
    return await api.client.post(f"{API}/session", json=body, headers=CSRF)


def with_cookie(value: str, **headers: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}", **headers}


async def call(
    api: Api, method: str, path: str, cookie: str, *, csrf: bool = True, **kw: Any
) -> httpx.Response:
    api.client.cookies.clear()
    headers = with_cookie(cookie, **(CSRF if csrf else {}))
    return await api.client.request(method, API + path, headers=headers, **kw)


def events(api: Api, type_: str) -> list[dict[str, Any]]:
    with api.store.session() as session:
        return [dict(e.data) for e in session.scalars(select(Event).where(Event.type == type_))]


def test_a_token_signs_in_and_the_cookie_is_httponly_strict_and_kept_only_as_a_digest(
    serve: Serve,
) -> None:
    async def body(api: Api) -> None:
        token = api.token("approve", user="olga")
        r = await sign_in(api, token=token)
        assert r.status_code == 200, r.text
        assert r.json()["user"] == "olga"
        assert r.json()["can"] == {"read": True, "trigger": False, "approve": True, "admin": False}
        value, attrs = set_cookie(r)
        assert attrs["httponly"] is True
        assert attrs["samesite"].lower() == "strict"
        assert attrs["path"] == "/"
        assert "secure" not in attrs  # plain http here; https gets Secure (below)

        me = await call(api, "GET", "/me", value)
        assert me.status_code == 200, me.text
        assert me.json()["user"] == "olga"
        assert me.json()["via"] == "session"
        assert set(me.json()["scopes"]) == {"approve", "read"}

        with api.store.session() as session:
            rows = session.scalars(select(WebSession)).all()
        assert [row.digest for row in rows] == [hashlib.sha256(value.encode()).hexdigest()]
        dump = "\n".join(
            str(r) for r in api.store.engine.connect().exec_driver_sql("SELECT * FROM sessions")
        )
        assert value not in dump
        assert [e["actor"] for e in events(api, "session.started")] == ["olga"]

        # The same through https: the cookie is Secure.
        secure = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api.app), base_url="https://conveyor"
        )
        async with secure:
            r = await secure.post(f"{API}/session", json={"token": token}, headers=CSRF)
        assert r.status_code == 200
        assert set_cookie(r)[1]["secure"] is True

    serve(body)


def test_a_password_signs_in_with_the_user_s_scopes_and_a_wrong_one_is_refused_and_audited(
    serve: Serve,
) -> None:
    async def body(api: Api) -> None:
        add_user(api.store, "pat", [], ["ops"], None, "root")
        set_credentials(api.store, "pat", password="correct horse", scopes=["approve"], by="root")
        with api.store.session() as session:
            stored = session.scalar(select(User.password_hash).where(User.name == "pat"))
        assert stored is not None
        assert "correct horse" not in stored
        assert stored.startswith("scrypt$")

        r = await sign_in(api, user="pat", password="correct horse")
        assert r.status_code == 200, r.text
        assert r.json()["can"]["approve"] is True
        assert r.json()["can"]["trigger"] is False

        for user, password in (("pat", "wrong horse"), ("nobody", "correct horse")):
            r = await sign_in(api, user=user, password=password)
            assert r.status_code == 401
            assert r.json()["error"]["message"] == "wrong user name or password"
            assert "set-cookie" not in r.headers
        r = await sign_in(api, token="cvy_made-up")
        assert r.status_code == 401
        assert r.json()["error"]["message"] == "unknown or revoked token"

        refused = [(e["via"], e["user"]) for e in events(api, "session.refused")]
        assert refused == [("password", "pat"), ("password", "nobody"), ("token", "cvy_made")]
        audit = (await api.get("/audit")).json()
        assert [e["actor"] for e in audit if e["type"] == "session.refused"][:2] == [
            "cvy_made",
            "nobody",
        ]

        r = await sign_in(api, user="pat")
        assert r.status_code == 422
        assert "password" in r.json()["error"]["message"]

    serve(body)


def test_an_address_that_keeps_guessing_must_wait(serve: Serve) -> None:
    """Ten failed sign-ins from one address: the eleventh attempt is refused with 429 and a
    Retry-After before any check, even with the right password; nothing is stored for it."""

    async def body(api: Api) -> None:
        add_user(api.store, "pat", [], ["ops"], None, "root")
        set_credentials(api.store, "pat", password="correct horse", scopes=["read"], by="root")
        for _ in range(10):
            r = await sign_in(api, user="pat", password="guess")
            assert r.status_code == 401
        r = await sign_in(api, user="pat", password="correct horse")
        assert r.status_code == 429
        assert "too many failed sign-ins" in r.json()["error"]["message"]
        assert 0 < int(r.headers["retry-after"]) <= 600
        assert "set-cookie" not in r.headers
        assert len(events(api, "session.refused")) == 10

    serve(body)


def test_a_cookie_without_the_csrf_header_cannot_change_anything(serve: Serve) -> None:
    async def body(api: Api) -> None:
        r = await sign_in(api, token=api.admin)
        value, _ = set_cookie(r)
        user = {"name": "ada", "groups": ["ops"]}
        r = await call(api, "POST", "/users", value, csrf=False, json=user)
        assert r.status_code == 403
        assert "X-Conveyor-CSRF: 1" in r.json()["error"]["message"]
        assert events(api, "user.saved") == []
        # Reading needs no header; changing with it works.
        assert (await call(api, "GET", "/users", value, csrf=False)).status_code == 200
        r = await call(api, "POST", "/users", value, json=user)
        assert r.status_code == 201, r.text
        # Signing in and out need it too (a cross-site form must not sign a browser in).
        api.client.cookies.clear()
        r = await api.client.post(f"{API}/session", json={"token": api.admin})
        assert r.status_code == 403
        # A Bearer token is no cookie: no header needed.
        r = await api.post("/users", {"name": "bea"})
        assert r.status_code == 201

    serve(body)


def test_a_read_only_session_cannot_trigger_approve_or_administer(
    serve: Serve, repo: GitRepo
) -> None:
    repo.commit("first", {"conveyor.yml": "service: shop\njobs:\n  test:\n    run: 'true'\n"})

    async def body(api: Api) -> None:
        await api.register("shop", repo.path)
        r = await sign_in(api, token=api.token("read", user="vera"))
        value, _ = set_cookie(r)
        assert r.json()["can"] == {"read": True, "trigger": False, "approve": False, "admin": False}
        for method, path, payload in (
            ("POST", "/runs", {"service": "shop", "rev": "HEAD"}),
            ("POST", "/approvals/1/approve", {}),
            ("POST", "/services/shop/environments/production/hold", {"reason": "x"}),
            ("POST", "/users", {"name": "x"}),
            ("PUT", "/users/vera/credentials", {"scopes": ["admin"]}),
        ):
            r = await call(api, method, path, value, json=payload)
            assert r.status_code == 403, (path, r.text)
            assert "without the" in r.json()["error"]["message"]
        assert (await call(api, "GET", "/runs", value)).status_code == 200
        assert (await api.get("/runs")).json() == []

    serve(body)


def test_signing_out_revoking_the_token_or_expiry_ends_a_session(serve: Serve) -> None:
    async def body(api: Api) -> None:
        first, _ = set_cookie(await sign_in(api, token=api.token("read")))
        r = await call(api, "DELETE", "/session", first)
        assert r.status_code == 204
        assert f"{COOKIE}=" in r.headers["set-cookie"]  # the browser is told to forget it
        r = await call(api, "GET", "/me", first)
        assert r.status_code == 401
        assert "sign in again" in r.json()["error"]["message"]

        api.token("read")  # token-2
        second_token = api.token("read")  # token-3
        second, _ = set_cookie(await sign_in(api, token=second_token))
        assert (await call(api, "GET", "/me", second)).status_code == 200
        revoke_token(api.store, "token-3")
        assert (await call(api, "GET", "/me", second)).status_code == 401

        third, _ = set_cookie(await sign_in(api, token=api.admin))
        assert (await call(api, "GET", "/me", third)).status_code == 200
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        with api.store.write() as w:
            w.session.execute(update(WebSession).values(expires_at=past))
        assert (await call(api, "GET", "/me", third)).status_code == 401

        # A new password ends the user's password sessions.
        add_user(api.store, "pat", [], [], None, "root")
        set_credentials(api.store, "pat", password="first password", scopes=["read"], by="root")
        fourth, _ = set_cookie(await sign_in(api, user="pat", password="first password"))
        assert (await call(api, "GET", "/me", fourth)).status_code == 200
        set_credentials(api.store, "pat", password="second password", by="root")
        assert (await call(api, "GET", "/me", fourth)).status_code == 401

    serve(body)


def test_passwords_are_salted_scrypt_hashes_checked_in_full() -> None:
    a, b = hash_password("hunter2hunter2"), hash_password("hunter2hunter2")
    assert a != b  # salted
    assert check_password("hunter2hunter2", a)
    assert not check_password("hunter2hunter", a)
    assert not check_password("hunter2hunter2", None)
    assert not check_password("hunter2hunter2", "md5$abc")


def test_the_stream_nudges_a_signed_in_browser_when_an_incident_opens(
    serve: Serve, repo: GitRepo
) -> None:
    repo.commit("first", {"conveyor.yml": "service: shop\njobs:\n  test:\n    run: 'true'\n"})

    async def body(api: Api) -> None:
        await api.register("shop", repo.path)
        value, _ = set_cookie(await sign_in(api, token=api.token("read")))
        client = httpx.AsyncClient(transport=StreamingASGITransport(api.app), base_url=BASE_URL)
        async with client:
            r = await client.get(f"{API}/stream", headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401
            r = await client.get(
                f"{API}/stream", params={"channels": "nope"}, headers=with_cookie(value)
            )
            assert r.status_code == 400
            async with client.stream(
                "GET",
                f"{API}/stream",
                params={"channels": "incidents,delivery"},
                headers=with_cookie(value),
            ) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.aiter_lines()
                assert await anext(lines) == ": connected"
                r = await api.post("/incidents", {"service": "shop", "title": "checkout is down"})
                assert r.status_code == 201, r.text
                seen: list[str] = []

                async def nudged() -> bool:
                    seen.append(await anext(lines))
                    return seen[-1].startswith("data:")

                await until(nudged, 10, "a change event")
        assert seen[-2:] == ["event: change", 'data: {"channel": "incidents"}']

    serve(body)


def test_the_ui_is_served_at_its_paths_and_sends_strangers_to_sign_in(serve: Serve) -> None:
    async def body(api: Api) -> None:
        c = api.client
        c.cookies.clear()
        r = await c.get("/releases/7?tab=checks")
        assert r.status_code == 303
        assert r.headers["location"] == "/signin?next=%2Freleases%2F7%3Ftab%3Dchecks"
        r = await c.get("/signin")
        assert r.status_code == 200
        assert '<script type="module" src="/static/app.js">' in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
        value, _ = set_cookie(await sign_in(api, token=api.token("read")))
        c.cookies.clear()
        for path in (
            "/",
            "/runs/1",
            "/releases/2",
            "/services/shop/environments/production",
            "/approvals",
            "/dora",
            "/incidents",
        ):
            r = await c.get(path, headers=with_cookie(value))
            assert r.status_code == 200, path
            assert r.headers["content-type"].startswith("text/html")
        r = await c.get("/static/app.js")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/javascript")
        assert r.headers["cache-control"] == "no-cache"
        assert "etag" in r.headers
        again = await c.get("/static/app.js", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
        for missing in (
            "/static/nope.js",
            "/static/../routes.py",
            "/static/%2e%2e/routes.py",
            "/static/lib",
            "/nowhere",
        ):
            assert (await c.get(missing)).status_code == 404, missing
        assert (await c.get(f"{API}/health")).status_code == 200
        assert (await c.get("/metrics")).status_code == 200

    serve(body)


@pytest.mark.integration
def test_user_add_with_a_password_from_the_prompt_and_passwd(conveyor: Conveyor) -> None:
    import subprocess

    def run(*args: str, input: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            conveyor.argv(*args),
            env=conveyor.env(),
            cwd=conveyor.cwd,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    r = run(
        "user",
        "add",
        "olga",
        "--password",
        "--scope",
        "read,approve",
        input="s3cret-pass\ns3cret-pass\n",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "s3cret-pass" not in r.stdout + r.stderr
    r = run("user", "add", "pat", "--password", input="short\nshort\n")
    assert r.returncode != 0
    assert "too short" in r.stdout + r.stderr
    r = run("user", "add", "pat", "--scope", "root", input="")
    assert r.returncode != 0
    assert "unknown scope root" in r.stdout + r.stderr
    r = run("user", "passwd", "olga", input="another-pass\nanother-pass\n")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("user", "passwd", "nobody", input="another-pass\nanother-pass\n")
    assert r.returncode != 0
    assert "no user named 'nobody'" in r.stdout + r.stderr


def test_the_stream_coalesces_a_flood_of_log_events(serve: Serve) -> None:
    async def body(api: Api) -> None:
        client = httpx.AsyncClient(transport=StreamingASGITransport(api.app), base_url=BASE_URL)

        def flood() -> None:
            # Each in its own transaction, as a runner reports lines: 200 announcements.
            for n in range(200):
                with api.store.write() as w:
                    w.emit("log.appended", run_id=1, position=n)
            with api.store.write() as w:
                w.emit("service.registered", service="shop")

        async with (
            client,
            client.stream(
                "GET",
                f"{API}/stream",
                params={"channels": "logs,services"},
                headers={"Authorization": f"Bearer {api.admin}"},
            ) as stream,
        ):
            lines = stream.aiter_lines()
            assert await anext(lines) == ": connected"
            await asyncio.to_thread(flood)
            channels: list[str] = []

            async def last_seen() -> bool:
                # Channels of one batch come in name order: "services" after "logs".
                line = await anext(lines)
                if line.startswith("data:"):
                    channels.append(json.loads(line.removeprefix("data:"))["channel"])
                return "services" in channels

            await until(last_seen, 10, "the last event's change")
        assert 1 <= channels.count("logs") <= 10, channels

    serve(body)
