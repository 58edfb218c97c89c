"""Approvals: who may decide, and recording each decision in the audit log.

People come from the server's users table (`conveyor user add`) and an optional users file
(``CONVEYOR_HOME/users.yml`` or ``CONVEYOR_USERS_FILE``)::

    users:
      alice: { emails: [alice@example.com], groups: [ops], slack: U024BE7LH }

An approver entry in `conveyor.yml` names a user or a group. Unless the approval says
`self_approval: true`, nobody who authored, committed or pushed any commit of the range being
deployed may decide it: every commit between what the environment serves and the release (a
`Change`, read from git by delivery.authorship), not only the release's own commit. A person is
matched by name and by each of their e-mails, against both the name and the e-mail of each
commit's author and committer and against its pushers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from conveyor.deploy_states import ApprovalStatus, DeploymentStatus
from conveyor.engine.promotion import close_approval, move, notify, version_of
from conveyor.errors import ConveyorError, NotFound
from conveyor.events import EventType, NoticeEvent
from conveyor.store.db import Store
from conveyor.store.models import Approval, ApprovalDecision, User, utcnow


class NotAllowed(ConveyorError):
    """The person may not take this decision (not an approver, or their own change)."""

    exit_code = 3


@dataclass(frozen=True)
class Person:
    name: str
    emails: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    slack_id: str | None = None

    def identities(self) -> set[str]:
        return {self.name.lower(), *(e.strip().lower() for e in self.emails if e.strip())}


@dataclass(frozen=True)
class Commit:
    """One commit of the range being deployed, and the people behind it."""

    sha: str
    author_name: str = ""
    author_email: str = ""
    committer_name: str = ""
    committer_email: str = ""
    # Who pushed it as the head of a push (runs of this commit), as recorded.
    pushers: tuple[str, ...] = ()
    # Its first line, shown to whoever decides.
    subject: str = ""

    def part_of(self, who: Person) -> str | None:
        """What ``who`` did to this commit ("authored", "committed", "pushed"), if anything."""
        mine = who.identities()

        def named(*values: str) -> bool:
            return any(v.strip().lower() in mine for v in values if v and v.strip())

        if named(self.author_name, self.author_email):
            return "authored"
        if named(self.committer_name, self.committer_email):
            return "committed"
        if named(*self.pushers):
            return "pushed"
        return None


@dataclass(frozen=True)
class Change:
    """What approving lets through: the commits between what the environment serves (``base``;
    None when it serves nothing) and the release, newest first. ``problem``: why they could not
    be read; then nobody may decide, since nobody can be shown not to be part of it."""

    commits: tuple[Commit, ...] = ()
    base: str | None = None
    problem: str | None = None


# Reads the change an approval is about (delivery.authorship.ChangeReader).
ChangeOf = Callable[[Approval], Change]


def users_file(home: Path, configured: Path | None = None) -> Path:
    """``configured`` (CONVEYOR_USERS_FILE), else users.yml in the data directory."""
    return configured or home / "users.yml"


def _file_people(home: Path, configured: Path | None = None) -> dict[str, Person]:
    path = users_file(home, configured)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConveyorError(f"{path}: not valid YAML: {exc}") from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise ConveyorError(f"{path}: expected a mapping 'users:' of name → details")
    people: dict[str, Person] = {}
    for name, given in users.items():
        details = given or {}
        if not isinstance(details, dict):
            raise ConveyorError(f"{path}: users.{name} must be a mapping")
        people[str(name)] = Person(
            name=str(name),
            emails=tuple(_strings(details.get("emails", details.get("email")))),
            groups=tuple(_strings(details.get("groups"))),
            slack_id=str(details["slack"]) if details.get("slack") else None,
        )
    return people


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def people(store: Store) -> dict[str, Person]:
    """Everyone known: the users file, then the users table (which wins on a name clash)."""
    known = _file_people(store.home, store.settings.users_file)
    with store.session() as session:
        for user in session.scalars(select(User)):
            known[user.name] = Person(
                user.name, tuple(user.emails), tuple(user.groups), user.slack_id
            )
    return known


def person(store: Store, name: str) -> Person:
    found = people(store).get(name)
    if found is None:
        raise NotAllowed(
            f"user {name} is not known to this server",
            hint="add them with `conveyor user add` or in the users file",
        )
    return found


def by_slack_id(store: Store, slack_id: str) -> Person:
    for p in people(store).values():
        if p.slack_id == slack_id:
            return p
    raise NotAllowed(f"Slack user {slack_id} is not mapped to a Conveyor user")


def add_user(
    store: Store, name: str, emails: list[str], groups: list[str], slack_id: str | None, by: str
) -> None:
    with store.write() as w:
        user = w.session.scalar(select(User).where(User.name == name))
        if user is None:
            user = User(name=name, created_at=utcnow())
            w.session.add(user)
        user.emails, user.groups, user.slack_id = emails, groups, slack_id
        w.emit(EventType.USER_SAVED, name=name, emails=emails, groups=groups, actor=by)


def _not_an_approver(who: Person, approval: Approval) -> bool:
    allowed = set(approval.approvers)
    return "*" not in allowed and who.name not in allowed and not allowed & set(who.groups)


NO_SELF_APPROVAL = "no self-approval (unless the approval says self_approval: true)"


def own_part(who: Person, approval: Approval, change: Change) -> str | None:
    """How ``who`` is part of what ``approval`` would let through, in words ("authored
    1a2b3c4 in the range being deployed"), or None. Always None with ``self_approval``."""
    if approval.self_approval:
        return None
    for commit in change.commits:
        part = commit.part_of(who)
        if part is not None:
            return f"{part} {commit.sha[:7]} in the range being deployed"
    # The people of the release's own commit, as recorded when the approval was requested.
    if who.identities() & set(approval.excluded):
        return f"authored, committed or pushed {approval.deployment.release.sha[:7]}, the release"
    return None


def _unreadable(approval: Approval, change: Change) -> str | None:
    if approval.self_approval or change.problem is None:
        return None
    return (
        f"who wrote the commits being deployed cannot be told ({change.problem}): nobody may "
        "decide until they can be read"
    )


def may_approve(who: Person, approval: Approval, change: Change) -> str | None:
    """Why ``who`` may not approve, or None if they may."""
    if _not_an_approver(who, approval):
        return f"{who.name} is not an approver here (approvers: {', '.join(approval.approvers)})"
    unreadable = _unreadable(approval, change)
    if unreadable is not None:
        return unreadable
    part = own_part(who, approval, change)
    if part is not None:
        return f"{who.name} {part}: {NO_SELF_APPROVAL}"
    return None


@dataclass(frozen=True)
class Verdict:
    """Whether someone may decide an approval now, and if not why, said to them. ``conflict``
    marks refusals about the approval's state (already decided), not about the person."""

    may_decide: bool
    reason: str | None = None
    conflict: bool = False


def verdict(
    approval: Approval,
    user: str | None,
    can_approve: bool,
    known: dict[str, Person],
    change: ChangeOf,
) -> Verdict:
    """May the holder of a token or session (its ``user``; ``can_approve``: it holds the approve
    scope) decide ``approval``? The same rules `decide` and the API enforce, read-only and
    worded for the person asking; ``known`` is `people(store)`, read once for a whole list;
    ``change`` is asked only when the answer depends on it."""
    if user is None:
        return Verdict(False, "you are signed in with a token without a user")
    if not can_approve:
        return Verdict(False, "your session has no approve scope")
    status = ApprovalStatus(approval.status)
    if status.terminal:
        return Verdict(False, f"this approval is already {status.value}", conflict=True)
    who = known.get(user)
    if who is None:
        return Verdict(False, f"you ({user}) are not known to this server as a user")
    if _not_an_approver(who, approval):
        return Verdict(
            False, f"you are not among the approvers ({', '.join(approval.approvers) or 'none'})"
        )
    found = change(approval)
    unreadable = _unreadable(approval, found)
    if unreadable is not None:
        return Verdict(False, unreadable)
    part = own_part(who, approval, found)
    if part is not None:
        return Verdict(False, f"you {part}: {NO_SELF_APPROVAL}")
    mine = next((d for d in approval.decisions if d.user == who.name), None)
    if mine is not None:
        done = "approved" if mine.decision == "approve" else "rejected"
        return Verdict(False, f"you already {done}", conflict=True)
    return Verdict(True)


def decide(
    store: Store,
    approval_id: int,
    user: str,
    decision: str,
    reason: str | None,
    via: str,
    who: Person | None = None,
    *,
    change: ChangeOf,
) -> ApprovalStatus:
    """Record ``user``'s approve/reject; returns the approval's status afterwards. ``change``
    reads what the approval would let through (the self-approval rule needs it)."""
    if decision not in ("approve", "reject"):
        raise ConveyorError(f"unknown decision {decision!r}: approve or reject")
    if decision == "reject" and not (reason or "").strip():
        raise ConveyorError("a rejection needs a reason (--reason)")
    with store.session() as session:
        approval = session.get(Approval, approval_id)
        if approval is None:
            raise NotFound(
                f"there is no approval {approval_id}", hint="`conveyor approvals` lists them"
            )
        service, deployment_id = approval.deployment.service.name, approval.deployment_id
        try:
            who = who or person(store, user)
            refusal = may_approve(who, approval, change(approval))
        except NotAllowed as exc:
            refusal = exc.message
    if refusal is not None:
        with store.write() as w:  # refused attempts belong in the audit log too
            w.emit(
                EventType.APPROVAL_REFUSED,
                service=service,
                approval=approval_id,
                deployment=deployment_id,
                actor=who.name if who else user,
                decision=decision,
                via=via,
                reason=refusal,
            )
        raise NotAllowed(refusal)
    assert who is not None
    with store.write() as w:
        approval = w.session.get(Approval, approval_id)
        assert approval is not None
        status = ApprovalStatus(approval.status)
        if status.terminal:
            raise ConveyorError(f"approval {approval_id} is already {status.value}")
        if any(d.user == who.name for d in approval.decisions):
            raise ConveyorError(f"{who.name} has already decided on approval {approval_id}")
        w.session.add(
            ApprovalDecision(
                approval_id=approval.id,
                user=who.name,
                decision=decision,
                reason=reason,
                via=via,
                at=utcnow(),
            )
        )
        w.session.flush()
        w.session.refresh(approval, ["decisions"])
        dep = approval.deployment
        w.emit(
            EventType.APPROVAL_DECISION,
            service=dep.service.name,
            approval=approval.id,
            deployment=dep.id,
            environment=dep.environment,
            actor=who.name,
            decision=decision,
            via=via,
            reason=reason,
        )
        if decision == "reject":
            close_approval(
                w, approval, ApprovalStatus.REJECTED, f"rejected by {who.name}: {reason}"
            )
            if approval.kind == "approval" and dep.status == DeploymentStatus.AWAITING_APPROVAL:
                move(w, dep, DeploymentStatus.REJECTED, f"rejected by {who.name}: {reason}")
                notify(
                    w,
                    dep,
                    NoticeEvent.DEPLOYMENT_FAILED,
                    f"{dep.service.name} {version_of(dep.release)} will not go to "
                    f"{dep.environment}: rejected by {who.name} ({reason})",
                )
        else:
            approvals = [d.user for d in approval.decisions if d.decision == "approve"]
            if len(approvals) >= approval.required:
                close_approval(
                    w, approval, ApprovalStatus.APPROVED, f"approved by {', '.join(approvals)}"
                )
        return ApprovalStatus(approval.status)
