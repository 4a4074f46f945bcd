"""Run untrusted (model-written) Python in a confined subprocess.

Every run gets a fresh temp working directory, a scrubbed environment, limits on wall time,
CPU time, memory, processes, file size and open files, and an audit hook that refuses
sockets. Run as root (as in CI) it is also put in its own network and mount namespaces
(no network, private /tmp, /root hidden) under a fresh unprivileged uid. On timeout, and
after every run, its whole process group and every process of its uid are killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LAUNCHER = Path(__file__).with_name("_sandbox_launch.py")

# Runs the prefix, the code and the tests, and proves the tests ran to their end (see there).
HARNESS = Path(__file__).with_name("_sandbox_harness.py").read_text()


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 512
    processes: int = 16
    file_size_mb: int = 16
    output_bytes: int = 64_000


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int | None  # negative: killed by that signal
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    isolation: str  # "namespaces" (root) or "rlimits"
    completed: bool = False  # the harness saw the tests (or the script) run to their end

    @property
    def ok(self) -> bool:
        return self.completed and self.exit_code == 0 and not self.timed_out


async def run_python(
    code: str,
    limits: SandboxLimits = SandboxLimits(),
    files: dict[str, str] | None = None,
    *,
    prefix: str = "",
    tests: str = "",
) -> SandboxResult:
    """Run `prefix`, then `code` (untrusted) as `__main__`, then `tests`, in the sandbox;
    `files` are written beside them first. `completed` only when all three ran to the end:
    exiting early, by any route, is failing."""
    workdir = Path(tempfile.mkdtemp(prefix="reflexa-sbx-"))
    as_root = os.geteuid() == 0
    uid = 200_000 + secrets.randbelow(1_000_000) if as_root else None
    job = json.dumps({"prefix": prefix, "code": code, "tests": tests})
    try:
        for name, text in {**(files or {}), "main.py": code, "job.json": job}.items():
            (workdir / name).write_text(text)
        if uid is not None:
            for path in [workdir, *workdir.iterdir()]:
                os.chown(path, uid, uid)
        config: dict[str, object] = {
            "workdir": str(workdir),
            "python": os.path.realpath(sys.executable),  # the base interpreter: stdlib only
            "prefix": os.path.realpath(sys.base_prefix),
            "uid": uid,
            "cpu_s": limits.cpu_s,
            "memory_mb": limits.memory_mb,
            "file_size_mb": limits.file_size_mb,
            "nproc": limits.processes if uid is not None else _user_processes() + limits.processes,
            "harness": HARNESS,
            "env": {
                "PATH": "/usr/bin:/bin",
                "HOME": str(workdir),
                "TMPDIR": str(workdir),
                "LANG": "C.UTF-8",
                "PYTHONHASHSEED": "0",
            },
        }
        return await _run(config, limits, uid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(config: dict[str, object], limits: SandboxLimits, uid: int | None) -> SandboxResult:
    started = time.monotonic()
    token = secrets.token_hex(16).encode()
    token_r, token_w = os.pipe()
    done_r, done_w = os.pipe()
    os.write(token_w, token)
    os.close(token_w)
    config |= {"token_fd": token_r, "done_fd": done_w}
    # Output goes to files, not pipes: asyncio's wait() returns only when the pipes close,
    # and a child that escaped into the background would hold them open.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={"PATH": "/usr/bin:/bin"},  # the launcher needs nothing of ours
                start_new_session=True,
                pass_fds=(token_r, done_w),
            )  # fmt: skip
        finally:
            os.close(token_r)
            os.close(done_w)
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), limits.wall_s)
        except TimeoutError:
            timed_out = True
        finally:
            _kill_all(proc.pid, uid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        completed = _read_done(done_r) == token
        stdout, stderr = (_read_capped(f, limits.output_bytes) for f in (out, err))
    return SandboxResult(
        exit_code=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        duration_s=round(time.monotonic() - started, 3),
        isolation="namespaces" if uid is not None else "rlimits",
        completed=completed,
    )


def _read_done(fd: int) -> bytes:
    """What the harness wrote to the completion pipe (every writer is dead by now)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 256)
    except BlockingIOError:
        return b""
    finally:
        os.close(fd)


def _read_capped(f: IO[bytes], cap: int) -> str:
    f.seek(0)
    data = f.read(cap + 1)
    text = data[:cap].decode(errors="replace")
    return text + "\n[output truncated]" if len(data) > cap else text


def _kill_all(pgid: int, uid: int | None) -> None:
    """Kill the sandbox's process group and, if it has its own uid, every process of it
    (which catches children that left the group with setsid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if uid is None:
        return
    for _ in range(50):  # a fork bomb may still be forking while we kill
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _pids_of_uid(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            real_uid = next(line for line in status.splitlines() if line.startswith("Uid:"))
            state = next(line for line in status.splitlines() if line.startswith("State:"))
            if int(real_uid.split()[1]) == uid and "zombie" not in state:
                pids.append(int(entry.name))
    return pids


def _user_processes() -> int:
    me = os.getuid()
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                count += entry.stat().st_uid == me
    return count
