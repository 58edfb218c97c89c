"""run_process against real processes: streaming, decoding, limits, timeouts and process groups."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import ConveyorError
from conveyor.proc import (
    ProcessResult,
    kill_process_group,
    process_alive,
    run_process,
)

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
PY = sys.executable


def run(
    argv: Sequence[str],
    cwd: Path,
    on_line: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> tuple[ProcessResult, list[str]]:
    lines: list[str] = []

    def collect(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    result = asyncio.run(run_process(argv, cwd=cwd, env=ENV, on_line=collect, **kwargs))
    return result, lines


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def pids_in(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


# --- exit status and line streaming -------------------------------------------------------


@pytest.mark.parametrize(("script", "code"), [("exit 0", 0), ("exit 3", 3), ("exit 255", 255)])
def test_exit_code_is_reported(tmp_path: Path, script: str, code: int) -> None:
    result, _ = run(["sh", "-c", script], tmp_path)
    assert result.exit_code == code
    assert result.ok is (code == 0)
    assert not result.timed_out
    assert not result.cancelled


def test_death_by_signal_is_a_negative_exit_code(tmp_path: Path) -> None:
    result, _ = run(["sh", "-c", "kill -KILL $$"], tmp_path)
    assert result.exit_code == -signal.SIGKILL
    assert not result.timed_out


def test_stdout_and_stderr_are_merged_in_order(tmp_path: Path) -> None:
    result, lines = run(["sh", "-c", "echo one; echo two >&2; echo three"], tmp_path)
    assert lines == ["one", "two", "three"]
    assert result.output_bytes == len("one\ntwo\nthree\n")


def test_lines_arrive_while_the_process_is_still_running(tmp_path: Path) -> None:
    # The child only finishes once the test has seen its first line: it would time out (and
    # exit 1) if output were only delivered at exit.
    flag = tmp_path / "seen"
    child = (
        "import os, sys, time\n"
        "print('waiting', flush=True)\n"
        "deadline = time.monotonic() + 30\n"
        f"while not os.path.exists({str(flag)!r}):\n"
        "    if time.monotonic() > deadline: sys.exit(1)\n"
        "    time.sleep(0.01)\n"
        "print('released')\n"
    )

    def on_line(line: str) -> None:
        if line == "waiting":
            flag.touch()

    result, lines = run([PY, "-c", child], tmp_path, on_line)
    assert result.exit_code == 0
    assert lines == ["waiting", "released"]


def test_final_line_without_newline_is_delivered(tmp_path: Path) -> None:
    _, lines = run(["printf", "first\\nno newline"], tmp_path)
    assert lines == ["first", "no newline"]


def test_empty_lines_are_kept_and_no_output_gives_no_lines(tmp_path: Path) -> None:
    _, lines = run(["printf", "a\\n\\nb\\n"], tmp_path)
    assert lines == ["a", "", "b"]
    result, lines = run(["true"], tmp_path)
    assert lines == []
    assert result.output_bytes == 0


def test_on_start_receives_the_pid_before_any_line(tmp_path: Path) -> None:
    events: list[str] = []
    result, _ = run(
        ["sh", "-c", "echo $$"],
        tmp_path,
        lambda line: events.append(f"line {line}"),
        on_start=lambda pid: events.append(f"start {pid}"),
    )
    assert events == [f"start {result.pid}", f"line {result.pid}"]


def test_only_the_given_environment_and_cwd_are_used(tmp_path: Path) -> None:
    (tmp_path / "marker.txt").touch()
    lines: list[str] = []
    result = asyncio.run(
        run_process(
            ["sh", "-c", "echo ${FOO}; echo ${HOME-unset}; ls"],
            cwd=tmp_path,
            env={**ENV, "FOO": "bar"},
            on_line=lines.append,
        )
    )
    assert result.exit_code == 0
    assert lines == ["bar", "unset", "marker.txt"]


def test_stdin_is_empty_so_readers_do_not_hang(tmp_path: Path) -> None:
    result, lines = run(["cat"], tmp_path, timeout=30)
    assert result.exit_code == 0
    assert not result.timed_out
    assert lines == []


# --- decoding -----------------------------------------------------------------------------


def test_invalid_utf8_and_control_characters_become_replacement_chars(tmp_path: Path) -> None:
    data = b"ok \xff\xfe end\nnul[\x00] bell[\x07] tab[\t] \x1b[31mred\x1b[0m\r\ncaf\xc3\xa9\n"
    (tmp_path / "data.bin").write_bytes(data)
    _, lines = run(["cat", "data.bin"], tmp_path)
    assert lines == [
        "ok \ufffd\ufffd end",
        "nul[\ufffd] bell[\ufffd] tab[\t] \x1b[31mred\x1b[0m",
        "café",
    ]


def test_carriage_returns_inside_a_line_are_marked_and_trailing_ones_dropped(
    tmp_path: Path,
) -> None:
    _, lines = run(["printf", "10%%\\r20%%\\r\\r\\n"], tmp_path)
    assert lines == ["10%\ufffd20%"]


def test_multibyte_character_split_across_writes_is_decoded_whole(tmp_path: Path) -> None:
    child = (
        "import os, time\n"
        "os.write(1, b'caf\\xc3')\n"
        "time.sleep(0.05)\n"  # makes separate chunks likely; the result must not depend on it
        "os.write(1, b'\\xa9\\n')\n"
    )
    _, lines = run([PY, "-c", child], tmp_path)
    assert lines == ["café"]


def test_random_binary_output_is_made_storable(tmp_path: Path) -> None:
    result, lines = run(["head", "-c", "4096", "/dev/urandom"], tmp_path)
    assert result.exit_code == 0
    assert result.output_bytes == 4096
    assert lines
    allowed = {"\t", "\x1b"}
    for line in lines:
        assert not any(ord(c) < 0x20 and c not in allowed for c in line)
        line.encode("utf-8")  # no lone surrogates: PostgreSQL text accepts it


def test_long_lines_are_split_at_max_line(tmp_path: Path) -> None:
    child = "import sys; sys.stdout.write('x' * 50000 + '\\n' + 'y' * 100 + '\\n')"
    _, lines = run([PY, "-c", child], tmp_path, max_line=16384)
    assert [len(line) for line in lines] == [16384, 16384, 16384, 50000 - 3 * 16384, 100]
    assert "".join(lines[:4]) == "x" * 50000


def test_line_of_exactly_max_line_is_not_split(tmp_path: Path) -> None:
    _, lines = run([PY, "-c", "print('z' * 1000)"], tmp_path, max_line=1000)
    assert lines == ["z" * 1000]


def test_huge_line_without_newline_streams_in_pieces(tmp_path: Path) -> None:
    # 20 MB with no newline at all: delivered as max_line pieces, never held whole.
    lengths: list[int] = []
    result = asyncio.run(
        run_process(
            ["head", "-c", "20000000", "/dev/zero"],
            cwd=tmp_path,
            env=ENV,
            on_line=lambda line: lengths.append(len(line)),
            max_line=4096,
        )
    )
    assert result.exit_code == 0
    assert max(lengths) == 4096
    assert sum(lengths) == 20_000_000


# --- output limit -------------------------------------------------------------------------


def test_output_beyond_max_bytes_is_counted_but_not_delivered(tmp_path: Path) -> None:
    script = "for i in $(seq 1 2000); do echo line-$i; done"
    result, lines = run(["sh", "-c", script], tmp_path, max_bytes=1000)
    assert result.truncated
    assert result.exit_code == 0
    assert result.output_bytes == sum(len(f"line-{i}\n") for i in range(1, 2001))
    marker = lines[-1]
    assert marker == (
        "[conveyor] output truncated after 1000 bytes; the rest of this step's output was discarded"
    )
    kept = lines[:-1]
    assert kept[0] == "line-1"
    assert sum(len(line) + 1 for line in kept) <= 1000 + 1
    assert "line-2000" not in lines


def test_200_mb_of_output_keeps_memory_bounded_and_finishes_fast(tmp_path: Path) -> None:
    stored = {"lines": 0, "chars": 0}

    def count(line: str) -> None:
        stored["lines"] += 1
        stored["chars"] += len(line)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.monotonic()
    result = asyncio.run(
        run_process(["head", "-c", "200000000", "/dev/zero"], cwd=tmp_path, env=ENV, on_line=count)
    )
    elapsed = time.monotonic() - started
    rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024

    assert result.exit_code == 0
    assert result.truncated
    assert result.output_bytes == 200_000_000
    assert stored["chars"] <= 64 * 2**20 + 200
    assert stored["lines"] <= 64 * 2**20 // 16384 + 2
    assert rss_growth_mib < 64, f"peak RSS grew by {rss_growth_mib:.0f} MiB"
    assert elapsed < 20


def test_output_exactly_at_max_bytes_is_not_truncated(tmp_path: Path) -> None:
    result, lines = run(["printf", "abc\\n"], tmp_path, max_bytes=4)
    assert not result.truncated
    assert lines == ["abc"]


# --- timeout, cancel and leftovers ----------------------------------------------------------

# Starts two background sleeps (grandchildren), records every pid, says so, and waits.
FAMILY = (
    "sleep 300 & echo $! > pids; sleep 300 & echo $! >> pids; echo $$ >> pids; echo ready; wait"
)


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    result, lines = run(["bash", "-c", FAMILY], tmp_path, timeout=1.5, kill_grace=2.0)
    assert result.timed_out
    assert not result.cancelled
    assert result.exit_code is None
    assert lines == ["ready"]
    pids = pids_in(tmp_path / "pids")
    assert len(pids) == 3
    assert wait_until(lambda: not any(process_alive(p) for p in pids))
    assert result.duration < 1.5 + 2.0 + 1.0


def test_process_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    script = "trap '' TERM; echo $$ > pid; echo ready; while :; do sleep 0.05; done"
    result, _ = run(["bash", "-c", script], tmp_path, timeout=0.5, kill_grace=0.5)
    assert result.timed_out
    assert 0.9 <= result.duration < 5
    pid = pids_in(tmp_path / "pid")[0]
    assert wait_until(lambda: not process_alive(pid))


def test_sigterm_lets_a_step_clean_up_without_waiting_out_the_grace(tmp_path: Path) -> None:
    script = "trap 'echo cleaning up; exit 0' TERM; echo ready; while :; do sleep 0.05; done"

    async def go() -> tuple[ProcessResult, list[str]]:
        cancel = asyncio.Event()
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            if line == "ready":
                cancel.set()

        res = await run_process(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=ENV,
            on_line=on_line,
            cancel=cancel,
            kill_grace=30,
        )
        return res, lines

    result, lines = asyncio.run(go())
    assert result.cancelled
    # bash may also report the sleep it was waiting on as "Terminated".
    assert lines[0] == "ready"
    assert lines[-1] == "cleaning up"
    assert result.duration < 10


def test_cancel_kills_the_whole_process_group(tmp_path: Path) -> None:
    async def go() -> tuple[ProcessResult, list[str]]:
        cancel = asyncio.Event()
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            if line == "ready":
                cancel.set()

        res = await run_process(
            ["bash", "-c", FAMILY],
            cwd=tmp_path,
            env=ENV,
            on_line=on_line,
            cancel=cancel,
            kill_grace=2.0,
        )
        return res, lines

    result, lines = asyncio.run(go())
    assert result.cancelled
    assert not result.timed_out
    assert result.exit_code is None
    assert lines == ["ready"]
    pids = pids_in(tmp_path / "pids")
    assert wait_until(lambda: not any(process_alive(p) for p in pids))


def test_background_child_holding_the_pipe_does_not_block_the_step(tmp_path: Path) -> None:
    started = time.monotonic()
    result, lines = run(["bash", "-c", "sleep 300 & echo $!; echo hi"], tmp_path)
    assert time.monotonic() - started < 5
    assert result.exit_code == 0
    assert lines[1:] == ["hi"]
    sleeper = int(lines[0])
    assert wait_until(lambda: not process_alive(sleeper))


def test_background_child_without_the_pipe_is_also_stopped(tmp_path: Path) -> None:
    result, lines = run(["bash", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"], tmp_path)
    assert result.exit_code == 0
    sleeper = int(lines[0])
    assert wait_until(lambda: not process_alive(sleeper))


def test_process_that_left_the_group_cannot_hold_the_step_open(tmp_path: Path) -> None:
    # A daemon that called setsid() is out of reach of the group kill; it still has our pipe.
    daemon = (
        "import os, time; os.setsid(); print(os.getpid(), flush=True); "
        'open("escaped", "w").close(); time.sleep(60)'
    )
    script = f"{PY} -c '{daemon}' & until [ -e escaped ]; do sleep 0.01; done"
    started = time.monotonic()
    result, lines = run(["bash", "-c", script], tmp_path, timeout=30)
    try:
        assert result.exit_code == 0
        assert time.monotonic() - started < 10
    finally:
        if lines:
            kill_process_group(int(lines[0]), signal.SIGKILL)


def test_cancelling_the_task_kills_the_process_group(tmp_path: Path) -> None:
    async def go() -> int:
        pid_box: list[int] = []
        task: asyncio.Task[ProcessResult]

        def on_line(line: str) -> None:
            if line == "ready":
                task.cancel()

        task = asyncio.create_task(
            run_process(
                ["bash", "-c", FAMILY],
                cwd=tmp_path,
                env=ENV,
                on_line=on_line,
                on_start=pid_box.append,
            )
        )
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid_box[0]

    main_pid = asyncio.run(go())
    pids = pids_in(tmp_path / "pids")
    assert main_pid in pids
    assert wait_until(lambda: not any(process_alive(p) for p in pids))


def test_an_error_in_on_line_stops_the_process_and_propagates(tmp_path: Path) -> None:
    def on_line(line: str) -> None:
        raise RuntimeError(f"storage failed on {line!r}")

    with pytest.raises(RuntimeError, match="storage failed on 'ready'"):
        run(["bash", "-c", FAMILY], tmp_path, on_line, kill_grace=1.0)
    pids = pids_in(tmp_path / "pids")
    assert wait_until(lambda: not any(process_alive(p) for p in pids))


# --- errors and helpers -------------------------------------------------------------------


def test_missing_command_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConveyorError, match="command not found: no-such-command-xyz") as info:
        run(["no-such-command-xyz", "--flag"], tmp_path)
    assert info.value.hint is not None


def test_non_executable_file_raises_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "build.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(ConveyorError, match="not executable"):
        run([str(script)], tmp_path)


def test_script_without_interpreter_line_raises_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "build"
    script.write_bytes(b"\x7fELF-not-really")
    script.chmod(0o755)
    with pytest.raises(ConveyorError, match=r"cannot run .*build: Exec format error"):
        run([str(script)], tmp_path)


def test_nonsense_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_line"):
        run(["true"], tmp_path, max_line=0)


def test_missing_working_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(ConveyorError, match="does not exist"):
        run(["true"], tmp_path / "nope")


def test_kill_process_group_ignores_groups_that_are_gone(tmp_path: Path) -> None:
    result, _ = run(["true"], tmp_path)
    assert wait_until(lambda: not process_alive(result.pid))
    kill_process_group(result.pid, signal.SIGKILL)  # no error


def test_process_alive(tmp_path: Path) -> None:
    assert process_alive(os.getpid())
    result, _ = run(["true"], tmp_path)
    assert not process_alive(result.pid)
