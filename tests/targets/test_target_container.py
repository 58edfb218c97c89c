"""The `container` target with real containers: images built from the test busybox image serve
their version with busybox httpd, are pushed to a real registry (tests/registry.py) and deployed
by digest through the private podman of tests/podman.py, behind the built-in proxy.

Every container a test leaves running is removed in teardown; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.delivery.publish import resolve_image
from conveyor.edge.client import EdgeClient, stop_edge
from conveyor.targets.base import Instance, ReleaseBundle, TargetContext, TargetError
from conveyor.targets.container import ContainerTarget
from tests.podman import Podman, podman_session  # noqa: F401
from tests.registry import Registry, registry_session  # noqa: F401
from tests.serverproc import free_port

SCENARIO_SECONDS = 90.0
# busybox httpd answers one request per connection; a fresh connection per request also makes
# sure every request goes through the proxy's current upstream.
CLOSE = {"Connection": "close"}

HTTPD = "exec httpd -f -p 127.0.0.1:$PORT"
SERVE = f'["sh", "-c", "{HTTPD} -h /www"]'
CRASH = (
    '["sh", "-c", "echo config line 1; echo config line 2; '
    'echo fatal: DATABASE_URL is not set >&2; exit 3"]'
)


def run(scenario: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, SCENARIO_SECONDS))


async def fetch(url: str | None) -> str:
    assert url is not None
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{url}/index.html", headers=CLOSE)
        assert response.status_code == 200, response.text
        return response.text.strip()


def bundle(release_id: int, image: str | None, tmp_path: Path) -> ReleaseBundle:
    return ReleaseBundle(
        release_id=release_id,
        service="web",
        sha=f"{release_id}" * 40,
        root=tmp_path,
        images=(image,) if image else (),
    )


@pytest.fixture(scope="module")
def images(
    podman: Podman, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """v1 and v2 serve their release's version; `crash` exits 3 at once. Each is built, pushed
    to the registry, removed locally (so deploying really pulls) and resolved to its digest."""
    root = tmp_path_factory.mktemp("images")
    pinned: dict[str, str] = {}
    for name, release_id, command in (("v1", 1, SERVE), ("v2", 2, SERVE), ("crash", 3, CRASH)):
        context = root / name
        (context / "www").mkdir(parents=True)
        (context / "www" / "index.html").write_text(f"{bundle(release_id, None, root).version}\n")
        (context / "Containerfile").write_text(
            f"FROM {podman.image}\nCOPY www /www\nCMD {command}\n"
        )
        local = f"localhost/conveyor-test-web:{name}"
        podman("build", "--quiet", "--isolation", "chroot", "-t", local, str(context))
        remote = f"{registry.host}/shop/web:{name}"
        podman("push", "--quiet", "--tls-verify=false", local, remote)
        podman("rmi", local)
        pinned[name] = resolve_image(remote, insecure=True)
    return pinned


@pytest.fixture(autouse=True)
def containers_are_removed(podman: Podman) -> Iterator[None]:
    assert podman.containers() == []
    yield
    left = podman.containers()
    if left:
        podman("rm", "--force", "--time", "0", *left)
    assert podman.containers() == []


class Env:
    """One service environment: its context, the lines the target logged, and targets."""

    def __init__(self, tmp_path: Path, podman: Podman, **options: Any) -> None:
        self.tmp_path = tmp_path
        self.lines: list[str] = []
        self.podman = podman
        self.ctx = TargetContext(
            service="web",
            environment="production",
            tier="production",
            options={"tls_verify": False, "stop_timeout": 5, **options},
            env={
                **podman.env,
                "PATH": "/host/only/bin:/usr/bin:/bin",
                "GREETING": "hello from conveyor",
                "API_TOKEN": "hunter2-secret",
                "CONVEYOR_SERVICE": "web",
                "CONVEYOR_ENVIRONMENT": "production",
            },
            state_dir=tmp_path / "state",
            log=self.lines.append,
        )

    def target(self, **options: Any) -> ContainerTarget:
        if not options:
            return ContainerTarget(self.ctx)
        return ContainerTarget(replace(self.ctx, options={**self.ctx.options, **options}))

    def running(self) -> list[str]:
        out = self.podman("ps", "--format", "{{.Names}}").stdout
        return sorted(n for n in out.split() if n.startswith("conveyor-"))


def container(instance: Instance) -> str:
    name = instance.state["container"]
    assert isinstance(name, str)
    return name


@pytest.mark.integration
def test_recreate_then_blue_green_then_rollback(
    images: dict[str, str], podman: Podman, tmp_path: Path
) -> None:
    env = Env(tmp_path, podman)
    v1, v2 = bundle(1, images["v1"], tmp_path), bundle(2, images["v2"], tmp_path)

    async def scenario() -> str | None:
        recreate = env.target(strategy="recreate")
        try:
            first = await recreate.deploy(v1, None)
            stable = recreate.endpoint(first)
            assert await fetch(stable) == v1.version
            assert await fetch(first.url) == v1.version
            assert container(first) == f"conveyor-web-production-{v1.version}"
            assert first.state["image"] == images["v1"]
            assert (await recreate.status(first)).running
        finally:
            await recreate.close()  # as a server restart would: the container keeps running

        blue_green = env.target(strategy="blue-green")
        try:
            # The restarted server takes the running container back, on the same stable port.
            assert await blue_green.adopt(first)
            assert blue_green.endpoint(first) == stable
            assert await fetch(stable) == v1.version

            second = await blue_green.deploy(v2, first)
            assert await fetch(second.url) == v2.version  # checks reach the new release...
            assert await fetch(stable) == v1.version  # ...while users still get the old one
            assert env.running() == sorted([container(first), container(second)])

            await blue_green.switch(second, first)
            assert await fetch(stable) == v2.version
            assert env.running() == [container(second)]
            assert podman.containers() == [container(second)]  # stopped *and* removed
            assert not (await blue_green.status(first)).running

            back = await blue_green.rollback(second, v1, first)
            assert await fetch(stable) == v1.version
            assert back.state["image"] == images["v1"]
            assert podman.containers() == [container(back)]
            assert not (await blue_green.status(second)).running
            assert (await blue_green.status(back)).running
        finally:
            await blue_green.close()
        return stable

    stable = run(scenario())
    assert (tmp_path / "state" / "port").read_text().strip() == stable.rpartition(":")[2]


@pytest.mark.integration
def test_with_the_edge_the_stable_port_answers_while_no_target_holds_it(
    images: dict[str, str], podman: Podman, tmp_path: Path
) -> None:
    """Decision 0014: the edge, not the server's target, holds the stable port."""
    env = Env(tmp_path, podman)
    home = tmp_path / "home"
    env.ctx = replace(env.ctx, edge=EdgeClient(home))
    v1, v2 = bundle(1, images["v1"], tmp_path), bundle(2, images["v2"], tmp_path)

    async def first_server() -> tuple[Instance, str | None]:
        target = env.target(strategy="blue-green")
        first = await target.deploy(v1, None)
        await target.switch(first, None)
        await target.close()  # the server goes away
        return first, target.endpoint(first)

    async def users(stable: str | None) -> str:
        return await fetch(stable)

    async def second_server(first: Instance, stable: str | None) -> None:
        target = env.target(strategy="blue-green")
        assert await target.adopt(first)
        assert target.endpoint(first) == stable
        second = await target.deploy(v2, first)
        await target.switch(second, first)
        assert await fetch(stable) == v2.version
        await target.discard(second)

    try:
        first, stable = run(first_server())
        assert run(users(stable)) == v1.version  # no target, no server: still answering
        run(second_server(first, stable))
    finally:
        stop_edge(home)


@pytest.mark.integration
def test_recreate_stops_the_previous_container_first(
    images: dict[str, str], podman: Podman, tmp_path: Path
) -> None:
    env = Env(tmp_path, podman, strategy="recreate")
    v1, v2 = bundle(1, images["v1"], tmp_path), bundle(2, images["v2"], tmp_path)

    async def scenario() -> None:
        target = env.target()
        try:
            first = await target.deploy(v1, None)
            second = await target.deploy(v2, first)
            assert await fetch(target.endpoint(second)) == v2.version
            assert podman.containers() == [container(second)]
            stopped = env.lines.index(f"stopped and removed {container(first)}")
            started = next(i for i, line in enumerate(env.lines) if line.startswith("started r2-"))
            assert stopped < started
        finally:
            await target.close()

    run(scenario())


@pytest.mark.integration
def test_a_container_that_exits_at_once_fails_and_the_previous_keeps_serving(
    images: dict[str, str], podman: Podman, tmp_path: Path
) -> None:
    env = Env(tmp_path, podman, strategy="blue-green")
    v1, crash = bundle(1, images["v1"], tmp_path), bundle(3, images["crash"], tmp_path)

    async def scenario() -> None:
        target = env.target()
        try:
            first = await target.deploy(v1, None)
            await target.switch(first, None)
            with pytest.raises(TargetError) as caught:
                await target.deploy(crash, first)
            message = caught.value.message
            assert message.startswith(
                f"container conveyor-web-production-{crash.version} exited with status 3 after"
            )
            assert "fatal: DATABASE_URL is not set" in message
            assert "config line 2" in message
            assert await fetch(target.endpoint(first)) == v1.version
            assert podman.containers() == [container(first)]  # the failed one is removed
        finally:
            await target.close()

    run(scenario())


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["recreate", "blue-green"])
def test_an_image_missing_from_the_registry_fails_at_pull_and_changes_nothing(
    images: dict[str, str], podman: Podman, registry: Registry, tmp_path: Path, strategy: str
) -> None:
    env = Env(tmp_path, podman, strategy=strategy)
    v1 = bundle(1, images["v1"], tmp_path)
    missing = bundle(4, f"{registry.host}/shop/web@sha256:{'0' * 64}", tmp_path)

    async def scenario() -> None:
        target = env.target()
        try:
            first = await target.deploy(v1, None)
            await target.switch(first, None)  # blue-green routes only on switch
            before = podman("inspect", "--format", "{{.Id}} {{.State.StartedAt}}", container(first))
            with pytest.raises(TargetError) as caught:
                await target.deploy(missing, first)
            assert caught.value.message.startswith(f"cannot pull {missing.images[0]}: ")
            assert await fetch(target.endpoint(first)) == v1.version
            assert podman.containers() == [container(first)]
            after = podman("inspect", "--format", "{{.Id}} {{.State.StartedAt}}", container(first))
            assert after.stdout == before.stdout  # not even restarted
        finally:
            await target.close()

    run(scenario())


@pytest.mark.integration
def test_the_container_gets_the_environment_but_not_the_hosts_settings(
    images: dict[str, str], podman: Podman, tmp_path: Path
) -> None:
    env = Env(tmp_path, podman, args=["--label", "team=shop"])
    v1 = bundle(1, images["v1"], tmp_path)

    async def scenario() -> Instance:
        target = env.target()
        try:
            return await target.deploy(v1, None)
        finally:
            await target.close()

    instance = run(scenario())
    name = container(instance)
    inside = podman("exec", name, "env").stdout.splitlines()
    assert "GREETING=hello from conveyor" in inside
    assert "API_TOKEN=hunter2-secret" in inside
    assert f"PORT={instance.state['port']}" in inside
    assert f"CONVEYOR_RELEASE={v1.version}" in inside
    assert "CONVEYOR_ENVIRONMENT=production" in inside
    # PATH and the engine's configuration describe this machine, not the image.
    assert not any(line.startswith("CONTAINERS_") for line in inside)
    assert "PATH=/host/only/bin:/usr/bin:/bin" not in inside
    labels = json.loads(podman("inspect", "--format", "{{json .Config.Labels}}", name).stdout)
    assert labels["team"] == "shop"
    assert labels["conveyor.release"] == v1.version


@pytest.mark.integration
def test_a_custom_command_and_a_fixed_port(
    images: dict[str, str], podman: Podman, tmp_path: Path
) -> None:
    port = free_port()
    # The crashing image made to serve by overriding its command.
    env = Env(
        tmp_path,
        podman,
        port=port,
        command=["sh", "-c", f"mkdir /w && echo custom > /w/index.html && {HTTPD} -h /w"],
    )
    crash = bundle(3, images["crash"], tmp_path)

    async def scenario() -> None:
        target = env.target()
        try:
            instance = await target.deploy(crash, None)
            assert target.endpoint(instance) == f"http://127.0.0.1:{port}"
            assert await fetch(target.endpoint(instance)) == "custom"
            await target.discard(instance)
            assert not (await target.status(instance)).running
        finally:
            await target.close()

    run(scenario())
    assert not (tmp_path / "state" / "port").exists()


@pytest.mark.integration
def test_a_container_that_never_listens_times_out_and_is_removed(
    images: dict[str, str], podman: Podman, tmp_path: Path
) -> None:
    env = Env(
        tmp_path,
        podman,
        ready_timeout="1s",
        command=["sh", "-c", "echo warming up; exec sleep 60"],
    )
    v1 = bundle(1, images["v1"], tmp_path)

    async def scenario() -> None:
        target = env.target()
        try:
            with pytest.raises(TargetError) as caught:
                await target.deploy(v1, None)
            message = caught.value.message
            assert "did not accept connections on port" in message
            assert "within 1 s" in message
            assert "warming up" in message
            assert podman.containers() == []
        finally:
            await target.close()

    run(scenario())


# --- refused before anything runs ----------------------------------------------------------------


def ctx(tmp_path: Path, **options: Any) -> TargetContext:
    return TargetContext(
        service="web",
        environment="production",
        tier="production",
        options=options,
        env={},
        state_dir=tmp_path,
        log=lambda _line: None,
    )


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"strategy": "rolling"}, "does not support strategy 'rolling'"),
        ({"engine": "nerdctl"}, "deploy.engine must be podman or docker"),
        ({"image": "--privileged"}, "deploy.image is not an image reference"),
        ({"args": "--privileged"}, "deploy.args must be a list of strings"),
        ({"command": [1, 2]}, "deploy.command must be a list of strings"),
        ({"tls_verify": "no"}, "deploy.tls_verify must be true or false"),
        ({"port": 70000}, "deploy.port must be a port number"),
        ({"ready_timeout": "soon"}, "deploy.ready_timeout"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, Any], words: str) -> None:
    target = ContainerTarget(ctx(tmp_path, **options))
    with pytest.raises(TargetError, match=words):
        run(target.deploy(bundle(1, "127.0.0.1:5000/app@sha256:" + "0" * 64, tmp_path), None))


def test_a_release_without_an_image_is_refused(tmp_path: Path) -> None:
    target = ContainerTarget(ctx(tmp_path))
    with pytest.raises(TargetError, match="has no container image to deploy"):
        run(target.deploy(bundle(1, None, tmp_path), None))
    assert not (tmp_path / "port").exists()
