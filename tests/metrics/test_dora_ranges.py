"""Lead time over real git history: a merge commit brings its branch's commits with their own
dates, a squash merge is the one commit it is. The commit ranges come from
metrics.ranges.commit_range on a repository made here, with commit dates set by hand."""

from __future__ import annotations

import datetime as dt

import pytest

from conveyor.metrics.ranges import commit_range
from tests.conftest import GitRepo
from tests.metrics import HOUR, at, deployment, dora


def dated(monkeypatch: pytest.MonkeyPatch, committed: str, authored: str | None = None) -> None:
    """The dates git gives the next commit (UTC)."""
    monkeypatch.setenv("GIT_COMMITTER_DATE", f"{committed}+00:00")
    monkeypatch.setenv("GIT_AUTHOR_DATE", f"{authored or committed}+00:00")


def test_a_merge_commit_brings_its_branch_with_the_branch_dates(
    repo: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    dated(monkeypatch, "2024-01-01T00:00:00")
    c0 = repo.commit("first", {"app.py": "v0"})
    repo.git("checkout", "-q", "-b", "feature")
    dated(monkeypatch, "2024-01-02T09:00:00")
    f1 = repo.commit("feature 1", {"feature.py": "1"})
    dated(monkeypatch, "2024-01-03T09:00:00")
    f2 = repo.commit("feature 2", {"feature.py": "2"})
    repo.git("checkout", "-q", "main")
    dated(monkeypatch, "2024-01-03T12:00:00")
    m1 = repo.commit("on main", {"app.py": "v1"})
    dated(monkeypatch, "2024-01-04T10:00:00")
    repo.git("merge", "-q", "--no-ff", "feature", "-m", "merge feature")
    merge = repo.git("rev-parse", "HEAD")

    first = commit_range(repo.path, c0)
    second = commit_range(repo.path, merge, c0)
    assert [c.sha for c in first] == [c0]
    assert {c.sha for c in second} == {merge, m1, f1, f2}
    report = dora(
        [
            deployment("d0", at(1, 1, 1), *first),  # c0: 1 h
            # Ended Jan 4 12:00: merge 2 h, m1 24 h, f2 27 h, f1 51 h.
            deployment("d1", at(1, 4, 12), *second),
        ],
        end=dt.date(2024, 1, 8),
    )
    lead = report["metrics"]["lead_time"]
    # 3600, 7200, 86400, 97200, 183600: median 86400; p90 rank ceil(4.5) = 5 → 183600.
    assert (lead["value"], lead["p90"], lead["sample_size"]) == (24 * HOUR, 51 * HOUR, 5)
    leads = {i["id"]: i["value"] for i in lead["explanation"]}
    assert (leads[f1], leads[f2], leads[m1], leads[merge]) == (
        51 * HOUR,
        27 * HOUR,
        24 * HOUR,
        2 * HOUR,
    )
    assert report["metrics"]["batch_size"]["value"] == 2.5  # batches of 1 and 4


def test_a_squash_merge_is_one_commit(repo: GitRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    dated(monkeypatch, "2024-01-01T00:00:00")
    c0 = repo.commit("first", {"app.py": "v0"})
    repo.git("checkout", "-q", "-b", "feature")
    dated(monkeypatch, "2024-01-02T09:00:00")
    repo.commit("feature 1", {"feature.py": "1"})
    dated(monkeypatch, "2024-01-03T09:00:00")
    repo.commit("feature 2", {"feature.py": "2"})
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--squash", "feature")
    # Committed on Jan 4 10:00; the forge kept the author date of the branch's first commit.
    dated(monkeypatch, "2024-01-04T10:00:00", authored="2024-01-02T09:00:00")
    repo.git("commit", "-q", "-m", "feature (squashed)")
    squash = repo.git("rev-parse", "HEAD")

    brought = commit_range(repo.path, squash, c0)
    assert [c.sha for c in brought] == [squash]  # the branch's commits are not reachable
    deployments = [
        deployment("d0", at(1, 1, 1), *commit_range(repo.path, c0)),  # 1 h
        deployment("d1", at(1, 4, 12), *brought),  # ended Jan 4 12:00
    ]
    committed = dora(deployments, end=dt.date(2024, 1, 8))["metrics"]["lead_time"]
    # 1 h and 2 h: median 1 h 30.
    assert (committed["value"], committed["sample_size"]) == (1.5 * HOUR, 2)
    authored = dora(deployments, end=dt.date(2024, 1, 8), lead_time_from="authored")
    # From the author date the squash waited 51 h (Jan 2 09:00 → Jan 4 12:00): median of 1 h
    # and 51 h = 26 h.
    assert authored["metrics"]["lead_time"]["value"] == 26 * HOUR
