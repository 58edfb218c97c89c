"""A successful run yields a release (commit, evidence, artifacts by digest); others do not."""

from __future__ import annotations

import hashlib

from tests.conftest import Conveyor, GitRepo


def test_a_successful_run_yields_a_release_and_a_failed_one_does_not(
    repo: GitRepo, conveyor: Conveyor
) -> None:
    sha = repo.commit(
        "ship it",
        {
            "conveyor.yml": """
            service: shop
            jobs:
              test:
                run: "true"
              package:
                needs: [test]
                run: mkdir -p dist && printf 'wheel' > dist/shop.whl
                artifacts: [dist/*.whl]
            """
        },
    )
    conveyor("run", check=True)
    repo.commit("break it", {"conveyor.yml": "service: shop\njobs:\n  test:\n    run: exit 1\n"})
    assert conveyor("run").returncode == 1

    [listed] = conveyor("releases", "--json").json()
    assert (listed["id"], listed["service"], listed["run"], listed["sha"]) == (1, "shop", 1, sha)
    assert listed["subject"] == "ship it"
    detail = conveyor("release", "1", "--json").json()
    assert detail["evidence"] == {"jobs": {"test": "succeeded", "package": "succeeded"}}
    assert detail["artifacts"] == [
        {
            "job": "package",
            "path": "dist/shop.whl",
            "digest": "sha256:" + hashlib.sha256(b"wheel").hexdigest(),
            "size": 5,
        }
    ]
    text = conveyor("release", "1").stdout
    assert "release 1 · shop · from run 1" in text
    assert "✓ package succeeded" in text
    assert "dist/shop.whl" in text
    missing = conveyor("release", "2")
    assert missing.returncode == 1
    assert "there is no release 2" in missing.stderr
