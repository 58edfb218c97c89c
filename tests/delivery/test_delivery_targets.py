"""The whole delivery chain on every built-in target, against real infrastructure: releases made
by the real `conveyor run`, carried out by a DeliveryController in this process (see harness),
with real containers and a real OCI registry (tests/podman.py, tests/registry.py), real sshd
hosts (tests/sshd.py) and a real Prometheus (tests/prometheus.py).

Each test follows a release from the run that made it to the environment serving it (or not),
through checks, verification, rollbacks and the records a person reads afterwards.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oras.client
import pytest

from tests.conftest import Conveyor, GitRepo
from tests.delivery.harness import HEALTH, delivery, pipeline, release
from tests.podman import Podman, podman_session  # noqa: F401
from tests.prometheus import Prometheus, prometheus_session  # noqa: F401
from tests.registry import (
    Registry,
    readonly_registry_session,  # noqa: F401
    registry_session,  # noqa: F401
)
from tests.sshd import SshServers, sshd_servers  # noqa: F401

pytestmark = pytest.mark.integration

# Every scenario is bounded as a whole, on top of pytest's per-test timeout.
SCENARIO_SECONDS = 100.0


def run(scenario: Any) -> None:
    asyncio.run(asyncio.wait_for(scenario, SCENARIO_SECONDS))


def conveyor_yml(environments: str, *, jobs: str | None = None, extra: str = "") -> str:
    """A pipeline for service `shop`: the harness's trivial job unless ``jobs`` is given."""
    text = pipeline(environments, extra=extra)
    if jobs is None:
        return text
    head, sep, rest = text.partition("environments:\n")
    assert head.startswith("service: shop\njobs:\n")
    assert sep
    return "service: shop\njobs:\n" + textwrap.indent(textwrap.dedent(jobs), "  ") + sep + rest


def current(path: Path) -> str | None:
    link = path / "current"
    return str(link.readlink()) if link.is_symlink() else None


# --- command ----------------------------------------------------------------------------------


def test_command_target_deploys_with_the_users_script_and_rolls_back_through_rollback(
    repo: GitRepo, conveyor: Conveyor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The "platform" is a folder of this machine, which no sandboxed command can reach (a real
    # one is across the network): the controller runs the commands unsandboxed.
    monkeypatch.setenv("CONVEYOR_SANDBOX", "off")
    out = tmp_path / "platform"
    out.mkdir()
    deployed = out / "deployed"
    history = out / "history.log"
    # The "platform" is a file holding what it runs; the scripts come from conveyor.yml and get
    # the release through CONVEYOR_* variables, the file's location through the env's `env:`.
    env = f"""
    production:
      env: {{ PLATFORM: {out} }}
      deploy:
        target: command
        deploy: 'echo "$CONVEYOR_RELEASE" > "$PLATFORM/deployed"; echo "deploy $CONVEYOR_RELEASE $(cat VERSION) after ${{CONVEYOR_PREVIOUS_RELEASE:-nothing}}" >> "$PLATFORM/history.log"'
        rollback: 'echo "$CONVEYOR_RELEASE" > "$PLATFORM/deployed"; echo "rollback to $CONVEYOR_RELEASE from $CONVEYOR_PREVIOUS_RELEASE" >> "$PLATFORM/history.log"'
      health: {{ command: {{ run: 'test ! -e "$PLATFORM/outage"', within: 1s, interval: 50ms }} }}
      verify:
        - run: 'test "$(cat "$PLATFORM/deployed")" = "$CONVEYOR_RELEASE" && test "$(cat HEALTHY)" = yes || {{ echo "smoke test failed on $CONVEYOR_RELEASE"; exit 1; }}'
    """  # noqa: E501
    first = release(repo, conveyor, "v1", conveyor_yml(env))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            production = h.env("production")
            v1 = production["version"]
            assert v1.startswith(f"r{first}-")
            assert deployed.read_text().strip() == v1

            second = release(repo, conveyor, "v2", conveyor_yml(env), healthy=False)
            await h.settle()
            production = h.env("production")
            assert production["version"] == v1
            assert production["healthy"] is True
            assert deployed.read_text().strip() == v1
            ok, failed, rollback = h.deployments("production")
            assert (ok["status"], ok["release"]) == ("succeeded", first)
            assert (failed["status"], failed["release"]) == ("rolled_back", second)
            v2 = failed["version"]
            assert "verification failed" in failed["reason"]
            assert f"smoke test failed on {v2}" in failed["reason"]
            assert (rollback["kind"], rollback["status"]) == ("rollback", "succeeded")
            assert (rollback["release"], rollback["rollback_of"]) == (first, failed["id"])
            # Deployed by the deploy script, put back by the rollback script (not by deploy).
            assert history.read_text().splitlines() == [
                f"deploy {v1} v1 after nothing",
                f"deploy {v2} v2 after {v1}",
                f"rollback to {v1} from {v2}",
            ]

            # The platform breaks: the next release fails its health check, and so does v1
            # once the rollback script put it back. The environment is held for a person, and
            # says what the platform runs: v1, unhealthy.
            (out / "outage").touch()
            third = release(repo, conveyor, "v3", conveyor_yml(env))
            await h.settle()
            *_, failed, rollback = h.deployments("production")
            assert (failed["release"], failed["status"]) == (third, "failed")
            assert failed["reason"].endswith(
                f"the rollback (deployment {rollback['id']}) failed too"
            )
            assert (rollback["kind"], rollback["release"]) == ("rollback", first)
            assert rollback["status"] == "failed"
            assert rollback["reason"].startswith("restored release is unhealthy: command:")
            assert deployed.read_text().strip() == v1
            production = h.env("production")
            assert production["version"] == v1
            assert production["healthy"] is False
            assert production["held"] is True
            assert f"rollback deployment {rollback['id']} failed" in production["hold_reason"]

    run(scenario())
    log = conveyor("deployment", "3", "--json").json()["log"]
    assert any("[conveyor] rollback: " in line for line in log), log
    # v2's incident was resolved by its rollback; v3's stays open, its rollback having failed.
    incidents = conveyor("incidents", "--json").json()
    assert sorted((i["deployment"], i["status"]) for i in incidents) == [
        (2, "resolved"),
        (4, "open"),
    ]


# --- an unknown target ------------------------------------------------------------------------


def test_an_unknown_target_is_refused_where_written_and_changes_nothing(
    repo: GitRepo, conveyor: Conveyor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_SANDBOX", "off")  # the platform is a folder, as above
    out = tmp_path / "platform"
    out.mkdir()
    good = f"""
    production:
      env: {{ PLATFORM: {out} }}
      deploy: {{ target: command, deploy: 'echo "$CONVEYOR_RELEASE" >> "$PLATFORM/deployed"' }}
    """
    bad = """
    production:
      deploy: { target: nosuch, start: python3 app.py }
    """
    first = release(repo, conveyor, "v1", conveyor_yml(good))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            before = h.env("production")
            assert before["version"].startswith(f"r{first}-")
            repo.commit("v2", {"conveyor.yml": conveyor_yml(bad)})
            refused = conveyor("run")
            assert refused.returncode == 1
            assert (
                ":7:23: environments.production.deploy.target: unknown deploy target 'nosuch'"
                in (refused.stderr)
            )
            assert "targets: command, container, process, ssh" in refused.stderr
            assert "Traceback" not in refused.stderr
            await h.settle()
            # Nothing changed: no release, no deployment; the environment still serves
            # release 1, healthy; the platform saw nothing more.
            assert [r["id"] for r in conveyor("releases", "--json").json()] == [first]
            assert h.env("production") == before
            assert len(h.deployments()) == 1
            assert (out / "deployed").read_text().splitlines() == [before["version"]]

    run(scenario())
    assert conveyor("incidents", "--json").json() == []


# --- ssh --------------------------------------------------------------------------------------


def test_ssh_target_rolls_over_both_hosts_rolls_back_by_hand_and_survives_an_unreachable_host(
    repo: GitRepo,
    conveyor: Conveyor,
    sshd: SshServers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The health command reads the "hosts'" folders, on this machine here: unsandboxed.
    monkeypatch.setenv("CONVEYOR_SANDBOX", "off")
    a, b = sshd.start(), sshd.start()
    # The hosts share this machine's filesystem: each keeps its releases in its own folder.
    path_a, path_b = tmp_path / "host-a" / "app", tmp_path / "host-b" / "app"
    restarts = tmp_path / "restarts.log"
    restart = f'echo "$(cat VERSION) $CONVEYOR_RELEASE $CONVEYOR_HOST" >> {restarts}'
    # Checked from the controller's machine: both hosts' `current` is the release's folder.
    links = " && ".join(
        f'test "$(readlink "{p}/current")" = "releases/$CONVEYOR_RELEASE"' for p in (path_a, path_b)
    )
    env = f"""
    production:
      deploy:
        target: ssh
        hosts:
          - {{ host: "{a.address}", path: "{path_a}" }}
          - {{ host: "{b.address}", path: "{path_b}" }}
        identity: "{sshd.identity}"
        known_hosts: "{sshd.known_hosts}"
        restart: {restart!r}
        connect_timeout: 5
        timeout: 30
      health: {{ command: {{ run: {links!r}, within: 5s, interval: 50ms }} }}
    """

    def restarted() -> list[str]:
        return restarts.read_text().splitlines() if restarts.exists() else []

    first = release(repo, conveyor, "v1", conveyor_yml(env))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            v1 = h.env("production")["version"]
            assert v1.startswith(f"r{first}-")
            assert current(path_a) == current(path_b) == f"releases/{v1}"
            assert restarted() == [f"v1 {v1} {a.label}", f"v1 {v1} {b.label}"]

            # A second release rolls over both hosts, one after the other.
            second = release(repo, conveyor, "v2", conveyor_yml(env))
            await h.settle()
            production = h.env("production")
            v2 = production["version"]
            assert v2.startswith(f"r{second}-")
            assert production["healthy"] is True
            assert current(path_a) == current(path_b) == f"releases/{v2}"
            assert restarted()[2:] == [f"v2 {v2} {a.label}", f"v2 {v2} {b.label}"]
            # The previous release stays on the hosts, ready to be switched back to.
            assert (path_a / "releases" / v1 / "VERSION").read_text() == "v1"

            # A person rolls back with the CLI, on the same data directory.
            conveyor("rollback", "production", check=True)
            await h.settle()
            production = h.env("production")
            assert production["version"] == v1
            assert production["healthy"] is True
            assert current(path_a) == current(path_b) == f"releases/{v1}"
            assert restarted()[4:] == [f"v1 {v1} {a.label}", f"v1 {v1} {b.label}"]
            back = h.deployments("production")[-1]
            assert (back["kind"], back["status"]) == ("rollback", "succeeded")
            assert back["release"] == first

            # Host b goes away: the next release fails naming it, and host a, already switched,
            # is put back. The environment stays on release 1.
            b.stop()
            third = release(repo, conveyor, "v3", conveyor_yml(env))
            await h.settle()
            failed = h.deployments("production")[-1]
            assert (failed["release"], failed["status"]) == (third, "failed")
            assert failed["reason"].startswith(f"host {b.label}: connection refused")
            assert f"{a.label} is back on {v1}" in failed["reason"]
            production = h.env("production")
            assert production["version"] == v1
            assert production["held"] is False
            assert current(path_a) == current(path_b) == f"releases/{v1}"
            v3 = failed["version"]
            assert restarted()[6:] == [f"v3 {v3} {a.label}", f"v1 {v1} {a.label}"]
            # No rollback was needed (the target put host a back itself), so none was made.
            assert len(h.deployments("production")) == 4

    run(scenario())
    assert conveyor("incidents", "--json").json() == []


# --- process: every release brings its own deploy options ------------------------------------


def test_each_release_is_deployed_with_its_own_options_and_a_rollback_restores_them(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    def env(start: str) -> str:
        return f"""
        production:
          deploy: {{ target: process, start: {start!r} }}
          {HEALTH}
        """

    release(repo, conveyor, "v1", conveyor_yml(env("python3 app.py")))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            url = h.env("production")["url"]
            assert (await h.get(url)).text == "v1"
            # The same controller (and target) deploys v2 with v2's start command...
            patched = "echo v2-patched > VERSION && exec python3 app.py"
            release(repo, conveyor, "v2", conveyor_yml(env(patched)))
            await h.settle()
            assert (await h.get(url)).text == "v2-patched"
            # ...and puts v1 back with v1's.
            conveyor("rollback", "production", check=True)
            await h.settle()
            assert (await h.get(url)).text == "v1"
            assert [d["status"] for d in h.deployments("production")] == ["succeeded"] * 3

    run(scenario())


# --- Prometheus health ------------------------------------------------------------------------


def test_a_prometheus_check_passes_a_release_then_fails_the_next_which_is_rolled_back(
    repo: GitRepo, conveyor: Conveyor, prometheus: Prometheus
) -> None:
    # The session's Prometheus is shared: this metric is this test's own.
    metric = "shop_delivery_targets_error_ratio"
    env = f"""
    production:
      deploy: {{ target: process, start: python3 app.py }}
      health:
        http: {{ path: /healthz, within: 5s, interval: 50ms }}
        prometheus: {{ url: "{prometheus.url}", query: {metric}, below: 0.5, for: 1s, within: 5s }}
    """
    prometheus.exporter.set(metric, 0.1)
    prometheus.wait_value(metric, 0.1)
    first = release(repo, conveyor, "v1", conveyor_yml(env))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            production = h.env("production")
            v1 = production["version"]
            assert v1.startswith(f"r{first}-")
            assert (await h.get(production["url"])).text == "v1"
            [ok] = h.deployments("production")
            checks = conveyor("deployment", str(ok["id"]), "--json").json()["checks"]
            prom = next(c for c in checks if c["kind"] == "prometheus")
            assert prom["outcome"] == "pass"
            assert prom["detail"].startswith("value stayed below 0.5 for 1 s")

            # The error ratio climbs: the next release fails its check and is rolled back.
            prometheus.exporter.set(metric, 0.9)
            await asyncio.to_thread(prometheus.wait_value, metric, 0.9)
            second = release(repo, conveyor, "v2", conveyor_yml(env))
            await h.settle()
            production = h.env("production")
            assert production["version"] == v1
            assert (await h.get(production["url"])).text == "v1"
            _ok, failed, rollback = h.deployments("production")
            assert (failed["release"], failed["status"]) == (second, "rolled_back")
            assert "prometheus: value 0.9 not below 0.5" in failed["reason"]
            assert (rollback["kind"], rollback["release"]) == ("rollback", first)
            assert rollback["status"] == "succeeded", rollback["reason"]
            assert production["healthy"] is True
            assert production["held"] is False
            # The rollback is judged by what observes v1 itself: Prometheus' samples are still
            # those of v2's traffic.
            detail = conveyor("deployment", str(rollback["id"]), "--json").json()
            assert [c["kind"] for c in detail["checks"]] == ["http"]
            assert any("prometheus check is not run" in line for line in detail["log"])

    try:
        run(scenario())
    finally:
        prometheus.exporter.remove(metric)


# --- container, registry and publishing -------------------------------------------------------

# The job builds the service's image from the test busybox image (busybox httpd serving the
# release's VERSION and HEALTHY files on 127.0.0.1:$PORT), pushes it where `publish:` says and
# declares it in `images:`; it also leaves a file artifact. Podman's configuration comes from
# the environment (tests/podman.py).
# Builds and pushes with this machine's podman: such a job needs the sandbox off (in use, a
# runner of its own, e.g. `conveyor runner --labels images --unsafe-no-sandbox`) and names the
# engine's configuration in its env, since a step never inherits the runner's environment.
IMAGE_JOB = """\
image:
  env: {env}
  run: |
    mkdir -p dist
    echo "notes for $(cat VERSION)" > dist/notes.txt
    podman build --quiet --isolation chroot -t "$CONVEYOR_REGISTRY/shop:$CONVEYOR_SHA" .
    podman push --quiet --tls-verify=false "$CONVEYOR_REGISTRY/shop:$CONVEYOR_SHA"
    podman rmi "$CONVEYOR_REGISTRY/shop:$CONVEYOR_SHA"
  artifacts: [dist/notes.txt]
  images: [$CONVEYOR_REGISTRY/shop:$CONVEYOR_SHA]
"""
CONTAINERFILE = """\
FROM {image}
COPY VERSION HEALTHY /www/
CMD ["sh", "-c", "exec httpd -f -p 127.0.0.1:$PORT -h /www"]
"""
CONTAINER_ENV = """
production:
  deploy: {{ target: container, tls_verify: false, stop_timeout: 2{extra} }}
  health: {{ http: {{ path: /HEALTHY, body: "^yes$", within: 3s, interval: 50ms }} }}
"""


def container_yml(registry: Registry, *, deploy_extra: str = "") -> str:
    # The `containers` fixture has put the test podman's configuration in this environment.
    names = ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF")
    engine = ", ".join(f'{k}: "{os.environ[k]}"' for k in names if k in os.environ)
    return conveyor_yml(
        CONTAINER_ENV.format(extra=deploy_extra),
        jobs=IMAGE_JOB.format(env=f"{{ {engine} }}"),
        extra=f'publish: {{ registry: "{registry.host}", insecure: true }}\n',
    )


@pytest.fixture
def containers(podman: Podman, monkeypatch: pytest.MonkeyPatch) -> Iterator[Podman]:
    """Podman's configuration for `conveyor run` and for the controller in this process; every
    container of the service is removed afterwards (they outlive the controller on purpose)."""
    for key, value in podman.env.items():
        monkeypatch.setenv(key, value)
    assert podman.containers("conveyor-shop-") == []
    yield podman
    left = podman.containers("conveyor-shop-")
    if left:
        podman("rm", "--force", "--time", "0", *left)


def running(podman: Podman) -> list[tuple[str, str]]:
    """(name, image) of the service's running containers."""
    out = podman("ps", "--format", "{{.Names}} {{.Image}}").stdout
    return sorted(
        (name, image)
        for name, _, image in (line.partition(" ") for line in out.splitlines())
        if name.startswith("conveyor-shop-")
    )


def test_container_releases_are_published_deployed_by_digest_and_rolled_back(
    repo: GitRepo, conveyor: Conveyor, containers: Podman, registry: Registry, tmp_path: Path
) -> None:
    conveyor.extra_env.update(containers.env)
    conveyor.extra_env["CONVEYOR_SANDBOX"] = "off"  # the image job runs podman (IMAGE_JOB)
    repo.write("Containerfile", CONTAINERFILE.format(image=containers.image))
    first = release(repo, conveyor, "v1", container_yml(registry))

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()

            # Published: the artifact by the registry's own digest, the image pinned.
            detail = conveyor("release", str(first), "--json").json()
            v1, sha1 = f"r{first}-{detail['sha'][:7]}", detail["sha"]
            publication = detail["publication"]
            assert publication["status"] == "published", publication
            digest = registry.digest("shop", v1)
            assert publication["reference"] == f"{registry.host}/shop:{v1}"
            assert publication["digest"] == digest
            assert publication["pinned"] == f"{registry.host}/shop@{digest}"
            image1 = f"{registry.host}/shop@{registry.digest('shop', sha1)}"
            assert publication["images"] == [image1]
            pulled = tmp_path / "pulled"
            client = oras.client.OrasClient(hostname=registry.host, insecure=True)
            client.pull(target=publication["pinned"], outdir=str(pulled))
            assert (pulled / "dist" / "notes.txt").read_text() == "notes for v1\n"

            # Deployed by digest behind the environment's stable URL.
            production = h.env("production")
            assert production["version"] == v1
            url = production["url"]
            assert (await h.get(f"{url}/VERSION")).text == "v1"
            assert running(containers) == [(f"conveyor-shop-production-{v1}", image1)]

            second = release(repo, conveyor, "v2", container_yml(registry))
            await h.settle()
            production = h.env("production")
            v2 = production["version"]
            assert v2.startswith(f"r{second}-")
            assert production["url"] == url
            assert (await h.get(f"{url}/VERSION")).text == "v2"
            [(name, image2)] = running(containers)
            assert name == f"conveyor-shop-production-{v2}"
            assert image2.startswith(f"{registry.host}/shop@sha256:")
            assert image2 != image1

            # v3 serves but is unhealthy: it is rolled back to v2, by v2's pinned image.
            third = release(repo, conveyor, "v3", container_yml(registry), healthy=False)
            await h.settle()
            production = h.env("production")
            assert production["version"] == v2
            assert production["healthy"] is True
            assert (await h.get(f"{url}/VERSION")).text == "v2"
            *_, failed, rollback = h.deployments("production")
            assert (failed["release"], failed["status"]) == (third, "rolled_back")
            assert "does not match" in failed["reason"]
            assert (rollback["kind"], rollback["release"]) == ("rollback", second)
            assert rollback["status"] == "succeeded"
            assert [image for _, image in running(containers)] == [image2]

            # An image that is not in the registry fails at the pull, before anything is
            # stopped: v2 keeps serving, untouched, and there is nothing to roll back.
            missing = f"{registry.host}/shop@sha256:{'0' * 64}"
            before = running(containers)
            fourth = release(
                repo, conveyor, "v4", container_yml(registry, deploy_extra=f", image: {missing}")
            )
            await h.settle()
            last = h.deployments("production")[-1]
            assert (last["release"], last["status"]) == (fourth, "failed")
            assert last["reason"].startswith(f"cannot pull {missing}: ")
            assert last["reason"].endswith(f"{v2} kept serving")
            assert h.env("production")["version"] == v2
            assert (await h.get(f"{url}/VERSION")).text == "v2"
            assert running(containers) == before

    run(scenario())
    deployments = conveyor("deployments", "--json").json()
    assert len(deployments) == 5


def test_a_registry_that_refuses_the_push_fails_the_publication_and_deploys_nothing(
    repo: GitRepo, conveyor: Conveyor, readonly_registry: Registry
) -> None:
    job = """\
    notes:
      run: mkdir -p dist && cat VERSION > dist/notes.txt
      artifacts: [dist/notes.txt]
    """
    yml = conveyor_yml(
        CONTAINER_ENV.format(extra=""),
        jobs=job,
        extra=f'publish: {{ registry: "{readonly_registry.host}", insecure: true }}\n',
    )
    first = release(repo, conveyor, "v1", yml)

    async def scenario() -> None:
        async with delivery(conveyor.home) as h:
            await h.settle()
            [cancelled] = h.deployments("production")
            publication = conveyor("release", str(first), "--json").json()["publication"]
            assert publication["status"] == "failed"
            error = publication["error"]
            assert error.startswith(f"registry {readonly_registry.host} refused the push: 405")
            assert cancelled["status"] == "cancelled"
            assert cancelled["reason"] == f"release {first} could not be published: {error}"
            assert cancelled["started_at"] is None
            assert h.env("production")["version"] is None

    run(scenario())
    events = [e["type"] for e in conveyor("audit", "--json").json()]
    assert "deployment.cancelled" in events
