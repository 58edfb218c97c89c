#!/usr/bin/env python3
"""Conveyor git hook: hands each pushed (post-receive) or committed (post-commit, post-merge,
post-rewrite) change to the Conveyor server, and never fails nor holds up the push or commit.

This module is the hook's template: `conveyor hook install` writes this very file out as the
hook, with a shebang naming the Python that installed it, started with -I -S (no site, no
environment variables, no user directories on the path), and its configuration embedded below
as a Python literal of plain data: strings, integers, lists of strings, written with repr() and
checked at install time to read back as the same data.

Standard library only, and as little of it as will do, since the hook's run is mostly Python
starting: about 20 ms in all for a push with the server up (start-up, compiling this file,
the post). Hence HTTP/1.1 over the C socket module rather than urllib or `socket` (their
imports alone would double that; TLS only for https), and no json module for a change on its
way out (its import of `re` costs more than the post): a change is a flat object of strings,
written as JSON by `to_json`. Reading spooled changes back uses json.

Each change is first written to the spool directory (atomically), then posted to the server
with a short timeout; taken (202) or already known (200), its spool file is removed, and the
hook asks which run builds it (the server waits up to ANNOUNCE_SECONDS for its intake) to print
the run's number and URL: the one wait a push has, bounded, for the answer people look for. When the
server cannot be reached the file stays, one line says so on stderr, and the hook exits 0;
the next run of the hook, `conveyor hook flush` and the server itself deliver what is left,
oldest first. A change's delivery id is a hash of repository, ref, before and after (the
server's own formula), so delivering it twice is harmless.

Refs, branch names and anything else read from git are data: sent as JSON, compared with
fnmatch, passed to git as single argv entries, never given to a shell.
"""
# conveyor-hook: written by `conveyor hook install`; reinstall it rather than edit it.

import _socket
import hashlib
import os
import sys
import time

MARKER = "conveyor-hook"
ZERO_SHA = "0" * 40
# Replaced at install time by the configuration, a literal of plain data:
# {"hook", "server", "token", "repository", "spool", "branches", "version"}.
CONFIG: dict[str, object] = {}
# Seconds for each of connect, send and the answer; the whole post is bounded by twice this.
TIMEOUT = 1.0
# How long the hook waits for the server to say which run builds a change, at most.
ANNOUNCE_SECONDS = 3.0
# Spooled changes delivered by one run of the hook, at most (time and count).
BACKLOG_SECONDS = 0.5
BACKLOG_FILES = 100
# Answers that mean the change itself is refused: retrying it can never succeed.
REJECTED = frozenset({400, 413, 422})
WHY = {
    401: "the server refused the token (401)",
    403: "the token lacks the trigger scope (403)",
    404: "the server builds no service from this repository (404; `conveyor service add`)",
}


class Unreachable(Exception):
    """The server did not answer (down, refused, timed out, or not speaking HTTP)."""


def delivery_id(repository: str, ref: str, before: str, after: str) -> str:
    """The same change always gets the same id, so a redelivery is recognised as one."""
    key = f"{repository}\0{ref}\0{before}\0{after}"
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def make_change(
    repository: str, ref: str, before: str, after: str, pusher: str | None
) -> dict[str, str]:
    change = {
        "repository": repository,
        "ref": ref,
        "before": before,
        "after": after,
        "delivery": delivery_id(repository, ref, before, after),
    }
    if pusher:
        change["pusher"] = pusher[:200]
    return change


def to_json(change: dict[str, str]) -> str:
    """JSON of a flat object of strings."""
    items = (f"{_json_string(k)}: {_json_string(v)}" for k, v in change.items())
    return "{" + ", ".join(items) + "}"


_ESCAPES = {i: f"\\u{i:04x}" for i in range(0x20)} | {0x22: '\\"', 0x5C: "\\\\", 0x7F: "\\u007f"}


def _json_string(text: str) -> str:
    # A lone surrogate (an undecodable byte in an environment variable) cannot be sent.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return '"' + text.translate(_ESCAPES) + '"'


def watched(ref: str, patterns: list[str]) -> bool:
    """A branch (not a tag) matching one of the patterns; no patterns: every branch."""
    if not ref.startswith("refs/heads/"):
        return False
    if not patterns:
        return True
    branch = ref[len("refs/heads/") :]
    if branch in patterns:
        return True
    globs = [p for p in patterns if any(c in p for c in "*?[")]
    if not globs:
        return False
    import fnmatch  # only when needed: it brings in re

    return any(fnmatch.fnmatchcase(branch, p) for p in globs)


def pusher() -> str | None:
    for name in ("GL_USERNAME", "GITEA_PUSHER_NAME", "USER", "LOGNAME"):
        value = os.environ.get(name)
        if value:
            return value
    return None


# --- reading the change from git ---------------------------------------------------------------


def changes_from_receive(data: bytes, config: dict[str, object]) -> list[dict[str, str]]:
    """post-receive: one `old new ref` line per updated ref on stdin."""
    patterns = _patterns(config)
    repository = str(config["repository"])
    who = pusher()
    changes = []
    for raw in data.splitlines():
        parts = raw.decode("utf-8", "replace").split(" ", 2)
        if len(parts) != 3:
            continue
        before, after, ref = parts
        if set(after) == {"0"} or not watched(ref, patterns):
            continue  # a deleted branch, a tag, or a branch nobody watches
        changes.append(make_change(repository, ref, before, after, who))
    return changes


def changes_from_commit(config: dict[str, object]) -> list[dict[str, str]]:
    """post-commit, post-merge, post-rewrite: the branch HEAD is on, its new tip and its
    previous one. (An amend runs both post-commit and post-rewrite: the same change twice,
    which the server takes once.)"""
    import subprocess

    def git(*args: str) -> list[str]:
        result = subprocess.run(
            ["git", *args], capture_output=True, stdin=subprocess.DEVNULL, check=False
        )
        if result.returncode != 0:
            return []
        return result.stdout.decode("utf-8", "replace").split()

    head = git("rev-parse", "HEAD", "--symbolic-full-name", "HEAD")
    if len(head) != 2 or not watched(head[1], _patterns(config)):
        return []  # detached (a rebase in progress), no commit, or not a watched branch
    after, ref = head
    previous = git("rev-parse", "--quiet", "--verify", f"{ref}@{{1}}")
    before = previous[0] if previous else ZERO_SHA
    if before == after:
        return []
    return [make_change(str(config["repository"]), ref, before, after, pusher())]


def _patterns(config: dict[str, object]) -> list[str]:
    value = config.get("branches")
    return [str(p) for p in value] if isinstance(value, list) else []


# --- the spool ---------------------------------------------------------------------------------


def spool(spool_dir: str, change: dict[str, str]) -> str:
    """Write the change to the spool (write a temporary file, then rename it into place)."""
    os.makedirs(spool_dir, mode=0o700, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}-{change['delivery']}.json"
    path = os.path.join(spool_dir, name)
    tmp = os.path.join(spool_dir, f".{name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(to_json(change))
    os.replace(tmp, path)
    return path


def spooled(spool_dir: str) -> list[str]:
    """Spooled changes, oldest first."""
    try:
        names = os.listdir(spool_dir)
    except OSError:
        return []
    return [
        os.path.join(spool_dir, n)
        for n in sorted(names)
        if n.endswith(".json") and not n.startswith(".")
    ]


def _forget(path: str) -> None:
    try:  # noqa: SIM105 - contextlib would cost the hook milliseconds of imports
        os.unlink(path)
    except FileNotFoundError:
        pass  # delivered by someone else meanwhile (another hook, a flush, the server)


def _keep(path: str) -> None:
    """Make a spool file durable: it is all that is left of the change until delivered."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


# --- HTTP --------------------------------------------------------------------------------------


def post(server: str, token: str, change: dict[str, str], timeout: float = TIMEOUT) -> int:
    """POST the change to /api/v1/hooks/git and return the status; Unreachable otherwise."""
    status, _ = exchange(server, token, "POST", "api/v1/hooks/git", to_json(change), timeout)
    return status


def exchange(
    server: str,
    token: str,
    method: str,
    path: str,
    body: str,
    timeout: float,
    *,
    whole: bool = False,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request to the server: (status, the answer's body when ``whole``, else
    nothing: the status line is all a post needs). Unreachable when it does not answer."""
    scheme, _, rest = server.partition("://")
    hostport, _, prefix = rest.partition("/")
    host, port = _host_port(hostport, 443 if scheme == "https" else 80)
    path = "/" + "/".join(p for p in [*prefix.split("/"), path] if p)
    data = body.encode()
    head = (
        f"{method} {path} HTTP/1.1\r\n"
        f"Host: {hostport}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n"
        "User-Agent: conveyor-hook\r\n"
        "Connection: close\r\n\r\n"
    )
    deadline = time.monotonic() + 2 * timeout
    try:
        sock = _connect(host, port, timeout, tls=scheme == "https")
        try:
            sock.sendall(head.encode("latin-1") + data)
            answer = b""
            while (whole or b"\r\n" not in answer) and len(answer) < 65536:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        finally:
            sock.close()
    except OSError as exc:
        raise Unreachable(str(exc) or type(exc).__name__) from None
    status = answer.split(b"\r\n", 1)[0].split(b" ")
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
        raise Unreachable("the answer is not HTTP")
    return int(status[1]), answer.partition(b"\r\n\r\n")[2]


def _connect(host: str, port: int, timeout: float, *, tls: bool) -> _socket.socket:
    if tls:
        import socket
        import ssl

        plain = socket.create_connection((host, port), timeout=timeout)
        return ssl.create_default_context().wrap_socket(plain, server_hostname=host)
    # The C module directly: `socket` would add 7 ms of imports (enum, selectors) to each push.
    error: OSError = OSError(f"cannot resolve {host}")
    name = host.encode() if host.isascii() else host  # str would load the idna codec
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error


def _host_port(hostport: str, default: int) -> tuple[str, int]:
    if hostport.startswith("["):  # [::1]:8080
        host, _, rest = hostport[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default
    host, sep, port = hostport.rpartition(":")
    return (host, int(port)) if sep else (hostport, default)


# --- delivering --------------------------------------------------------------------------------


def deliver(config: dict[str, object], path: str, change: dict[str, str] | None = None) -> str:
    """Deliver one spooled change: "delivered", "rejected: why" or "kept: why"."""
    if change is None:
        import json

        try:
            with open(path, encoding="utf-8") as f:
                change = json.load(f)
        except FileNotFoundError:
            return "delivered"  # someone else delivered it meanwhile
        except (OSError, ValueError):
            _set_aside(path)
            return "rejected: not a readable change"
        if not isinstance(change, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in change.items()
        ):
            _set_aside(path)
            return "rejected: not a change"
    try:
        status = post(str(config["server"]), str(config["token"]), change)
    except Unreachable as exc:
        return f"kept: {config['server']} is unreachable ({exc})"
    if 200 <= status < 300:
        _forget(path)
        return "delivered"
    if status in REJECTED:
        _set_aside(path)
        return f"rejected: the server answered {status}"
    return f"kept: {WHY.get(status, f'the server answered {status}')}"


def _set_aside(path: str) -> None:
    """A change the server refuses as malformed is kept for a person to read, not retried."""
    try:  # noqa: SIM105
        os.replace(path, path + ".rejected")
    except OSError:
        pass


def deliver_spool(
    config: dict[str, object],
    *,
    max_files: int | None = None,
    max_seconds: float | None = None,
) -> tuple[int, int, int, str | None]:
    """Deliver spooled changes oldest first; stop at the first the server does not take.
    Returns (delivered, rejected, left in the spool, the last problem met)."""
    started = time.monotonic()
    delivered = rejected = 0
    problem = None
    for path in spooled(str(config["spool"])):
        if max_files is not None and delivered + rejected >= max_files:
            break
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            break
        outcome = deliver(config, path)
        if outcome == "delivered":
            delivered += 1
        elif outcome.startswith("rejected"):
            rejected += 1
            problem = f"{os.path.basename(path)} {outcome}"
        else:
            problem = outcome.removeprefix("kept: ")
            break
    return delivered, rejected, len(spooled(str(config["spool"]))), problem


def run_hook(config: dict[str, object], stdin: bytes) -> None:
    hook = config.get("hook")
    changes = (
        changes_from_receive(stdin, config)
        if hook == "post-receive"
        else changes_from_commit(config)
    )
    spool_dir = str(config["spool"])
    # Changes spooled while the server was away go first: it must see pushes in the order they
    # happened, or it takes the older one for a late delivery and does not run it.
    backlog, left, problem = 0, 0, ""
    if spooled(spool_dir):
        backlog, _, left, waiting = deliver_spool(
            config, max_files=BACKLOG_FILES, max_seconds=BACKLOG_SECONDS
        )
        problem = waiting or "older changes are still waiting"
    reachable, queued = left == 0, left
    for change in changes:
        try:
            path = spool(spool_dir, change)
        except OSError as exc:
            _say(f"cannot write to the spool {spool_dir} ({exc}); sending directly")
            _send_unspooled(config, change)
            continue
        outcome = deliver(config, path, change) if reachable else "kept"
        if outcome == "delivered":
            announce(config, change)
        elif outcome.startswith("kept"):
            _keep(path)
            queued += 1
            if reachable:
                reachable = False
                problem = outcome.removeprefix("kept: ")
        elif outcome.startswith("rejected"):
            _say(f"{change['ref']} at {change['after'][:12]} {outcome}")
    if not reachable:
        _say(f"{problem}; {queued} change(s) queued in {spool_dir}, sent on the next run")
    elif backlog:
        _say(f"delivered {backlog} queued change(s)")


def announce(config: dict[str, object], change: dict[str, str]) -> None:
    """Say which run builds a change just delivered, and where to watch it: the server is
    asked (waiting ANNOUNCE_SECONDS at most) what its intake made of the change."""
    server = str(config["server"])
    try:
        status, body = exchange(
            server,
            str(config["token"]),
            "GET",
            f"api/v1/hooks/git/{change['delivery']}?wait={ANNOUNCE_SECONDS:g}",
            "",
            ANNOUNCE_SECONDS + TIMEOUT,
            whole=True,
        )
    except Unreachable:
        return
    if status != 200:
        return
    import json

    try:
        outcomes = json.loads(body)["outcomes"]
    except (ValueError, KeyError, TypeError):
        return
    for outcome in outcomes:
        service, run = outcome.get("service"), outcome.get("run")
        if run:
            _say(f"run {run} of {service}: {server.rstrip('/')}/runs/{run}")
        elif outcome.get("status") == "ignored":
            _say(f"{service} does not build {change['ref']}: {outcome.get('reason')}")
        else:
            _say(f"{service}: change received; `conveyor runs` shows its run once it is queued")


def _send_unspooled(config: dict[str, object], change: dict[str, str]) -> None:
    where = f"{change['ref']} at {change['after'][:12]}"
    try:
        status = post(str(config["server"]), str(config["token"]), change)
    except Unreachable as exc:
        _say(f"{where} was not sent: {exc}")
        return
    if not 200 <= status < 300:
        _say(f"{where} was not sent: {WHY.get(status, f'the server answered {status}')}")


def _say(message: str) -> None:
    try:
        sys.stderr.write(f"conveyor: {message}\n")
        sys.stderr.flush()
    except Exception:  # noqa: S110 - a closed stderr must not fail the push
        pass


def main(argv: list[str]) -> int:
    """Always 0: a push or commit has already happened; the hook only reports it."""
    try:
        config = CONFIG
        if argv[1:2] == ["--flush"]:  # run by hand: deliver the spool now
            delivered, _, left, problem = deliver_spool(config)
            _say(f"delivered {delivered}, {left} left" + (f": {problem}" if problem else ""))
            return 0
        stdin = b""
        if config.get("hook") in ("post-receive", "post-rewrite"):  # others get no stdin
            stdin = sys.stdin.buffer.read()  # (post-rewrite's list is read only to take it)
        run_hook(config, stdin)
    except BaseException as exc:  # never fail the push, whatever happens
        _say(f"hook failed ({type(exc).__name__}: {exc}); what was queued stays queued")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
