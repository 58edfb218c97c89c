"""The process target's persistent data folder: `$CONVEYOR_DATA_DIR` is the same folder for every
release of an environment, so an app's SQLite database (flaskr's case) survives deploys and
rollbacks, while each release folder is replaced. Real releases, real HTTP on 127.0.0.1; every
release started is killed by its PID in teardown (the fixture of test_target_process)."""

from __future__ import annotations

import stat
from pathlib import Path

from conveyor.targets.base import ReleaseBundle
from conveyor.targets.process import data_dir
from tests.targets.test_target_process import (
    Env,
    get,
    release,
    releases_are_stopped,  # noqa: F401  (autouse: stops what a test started)
    run,
)

# Each start of a release is recorded in the database; `/` lists them, one version a line, and
# `/healthz` answers 200, or 500 when a HEALTHY file says "no" (tests/delivery uses it too).
NOTEBOOK = """
    import os, pathlib, sqlite3
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    VERSION = pathlib.Path("VERSION").read_text().strip()
    HEALTHY = pathlib.Path("HEALTHY")
    DATABASE = os.path.join(os.environ["CONVEYOR_DATA_DIR"], "notebook.db")

    with sqlite3.connect(DATABASE) as db:
        db.execute("CREATE TABLE IF NOT EXISTS starts (version TEXT)")
        db.execute("INSERT INTO starts VALUES (?)", (VERSION,))

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/healthz":
            ok = not HEALTHY.exists() or HEALTHY.read_text().strip() == "yes"
            status, body = ("200 OK", "ok") if ok else ("500 Internal Server Error", "broken")
        else:
            with sqlite3.connect(DATABASE) as db:
                rows = db.execute("SELECT version FROM starts ORDER BY rowid").fetchall()
            status, body = "200 OK", "\\n".join(row[0] for row in rows)
        start_response(status, [("Content-Type", "text/plain")])
        return [body.encode()]

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    make_server("127.0.0.1", int(os.environ["PORT"]), app, handler_class=Quiet).serve_forever()
"""


async def notebook(url: str | None) -> list[str]:
    """The starts the release at ``url`` reads from its database."""
    assert url is not None
    response = await get(url)
    assert response.status_code == 200, response.text
    return response.text.splitlines()


def test_the_database_in_the_data_dir_survives_deploys_and_a_rollback(tmp_path: Path) -> None:
    env = Env(tmp_path)
    a, b = release(tmp_path, 1, NOTEBOOK), release(tmp_path, 2, NOTEBOOK)

    async def scenario() -> None:
        target = env.target()
        try:
            first = await target.deploy(a, None)
            assert await notebook(first.url) == [a.version]

            second = await target.deploy(b, first)
            await target.switch(second, first)
            # Release 2 reads what release 1 wrote.
            assert await notebook(second.url) == [a.version, b.version]

            back = await target.rollback(second, a, None)
            assert await notebook(back.url) == [a.version, b.version, a.version]
        finally:
            await target.close()

    run(scenario())
    # The database is in the data folder; the release folders hold none.
    assert (env.ctx.state_dir / "data" / "notebook.db").is_file()
    assert not list(a.root.glob("*.db"))
    assert not list(b.root.glob("*.db"))


def test_the_data_dir_is_private_and_kept_per_environment(tmp_path: Path) -> None:
    production = Env(tmp_path)
    path = data_dir(production.ctx.state_dir)
    assert path == production.ctx.state_dir / "data"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    (path / "kept.txt").write_text("kept")

    # Made again (the next deploy): the same folder, its content untouched.
    assert data_dir(production.ctx.state_dir) == path
    assert (path / "kept.txt").read_text() == "kept"


def test_each_environment_has_a_data_dir_of_its_own(tmp_path: Path) -> None:
    staging, production = Env(tmp_path / "staging"), Env(tmp_path / "production")
    bundles: list[ReleaseBundle] = []
    for env in (staging, production):
        env.ctx.state_dir.parent.mkdir(parents=True)
        bundles.append(release(env.ctx.state_dir.parent, 1, NOTEBOOK))

    async def scenario() -> list[list[str]]:
        seen = []
        for env, bundle in zip((staging, production), bundles, strict=True):
            target = env.target()
            try:
                instance = await target.deploy(bundle, None)
                seen.append(await notebook(instance.url))
            finally:
                await target.close()
        return seen

    # One start each: neither environment sees the other's database.
    assert run(scenario()) == [[bundles[0].version], [bundles[1].version]]
    for env in (staging, production):
        assert (env.ctx.state_dir / "data" / "notebook.db").is_file()
