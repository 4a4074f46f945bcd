"""Run untrusted (model-written) Python in an isolated subprocess.

Every run gets a fresh, size-limited working directory, a scrubbed environment, limits on
wall time, CPU time, memory, processes, file size and open files, and an audit hook that
refuses sockets, inside bubblewrap's namespaces (see `isolation`): no network, no view of
the host's processes or home directories, nothing writable outside its own tmpfs. As root it
also runs under a fresh uid. Where bwrap cannot run, model code is refused unless the caller
allows it to run unconfined (limits and the audit hook only). On timeout, and after every
run, everything it started is killed.
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

from reflexa.evals.isolation import STAGE, Isolation, bwrap_argv, find_isolation

# Confines the process from the inside, then execs the harness (see there).
LAUNCHER = Path(__file__).with_name("_sandbox_launch.py").read_text()
# Runs the prefix, the code and the tests, and proves the tests ran to their end (see there).
HARNESS = Path(__file__).with_name("_sandbox_harness.py").read_text()


class SandboxUnavailable(RuntimeError):
    """No isolation on this machine, and running model code unconfined was not allowed."""


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 512
    processes: int = 16
    file_size_mb: int = 16
    scratch_mb: int = 64  # the working directory's tmpfs: all files together
    output_bytes: int = 64_000


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int | None  # negative: killed by that signal
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    isolation: str  # "bwrap", or "none" (allowed to run unconfined)
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
    allow_unconfined: bool = False,
    isolation: Isolation | None = None,
) -> SandboxResult:
    """Run `prefix`, then `code` (untrusted) as `__main__`, then `tests`, in the sandbox;
    `files` are written beside them first. `completed` only when all three ran to the end:
    exiting early, by any route, is failing. Raises SandboxUnavailable when this machine
    cannot isolate the code and `allow_unconfined` is false."""
    isolation = isolation or find_isolation()
    confined = isolation.kind == "bwrap"
    if not confined and not allow_unconfined:
        raise SandboxUnavailable(
            f"model code was not run: {isolation.detail}. Set sandbox.allow_unconfined = true "
            "to run it with resource limits only (no file-system or network isolation)."
        )
    workdir = Path(tempfile.mkdtemp(prefix="reflexa-sbx-"))
    uid = 200_000 + secrets.randbelow(1_000_000) if confined and os.geteuid() == 0 else None
    job = {"prefix": prefix, "code": code, "tests": tests}
    try:
        for name, text in {**(files or {}), "main.py": code}.items():
            (workdir / name).write_text(text)
        config: dict[str, object] = {
            "workdir": str(workdir),
            "stage": STAGE if confined else None,
            "python": os.path.realpath(sys.executable),  # the base interpreter: stdlib only
            "uid": uid,
            "cpu_s": limits.cpu_s,
            "memory_mb": limits.memory_mb,
            "file_size_mb": limits.file_size_mb,
            # bwrap: counted in the sandbox's own namespace or uid (with its init and the
            # harness); unconfined: among all of this user's processes.
            "nproc": limits.processes + 2 if confined else _user_processes() + limits.processes,
            "harness": HARNESS,
            "env": {
                "PATH": "/usr/bin:/bin",
                "HOME": str(workdir),
                "TMPDIR": str(workdir),
                "LANG": "C.UTF-8",
                "PYTHONHASHSEED": "0",
            },
        }
        return await _run(config, job, limits, isolation)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(
    config: dict[str, object], job: dict[str, str], limits: SandboxLimits, isolation: Isolation
) -> SandboxResult:
    started = time.monotonic()
    token = secrets.token_hex(16).encode()
    token_r, token_w = os.pipe()
    done_r, done_w = os.pipe()
    info_r, info_w = os.pipe()  # bwrap writes the pid of its init here
    os.write(token_w, token)
    os.close(token_w)
    # Output goes to files, not pipes: asyncio's wait() returns only when the pipes close,
    # and a child that escaped into the background would hold them open. The job (prefix,
    # code, tests) is read from an unlinked file: the code cannot find the tests on disk,
    # and the harness closes it before the code runs.
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryFile() as job_file,
    ):
        job_file.write(json.dumps(job).encode())
        job_file.seek(0)
        config |= {"token_fd": token_r, "done_fd": done_w, "job_fd": job_file.fileno()}
        command = [str(config["python"]), "-I", "-S", "-c", LAUNCHER, json.dumps(config)]
        if isolation.kind == "bwrap":
            workdir = str(config["workdir"])
            bwrap = bwrap_argv(isolation.detail, workdir, limits.scratch_mb, info_w)
            command = [*bwrap, *command]
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={"PATH": "/usr/bin:/bin"},  # the launcher needs nothing of ours
                start_new_session=True,
                pass_fds=(token_r, done_w, info_w, job_file.fileno()),
            )
        finally:
            for fd in (token_r, done_w, info_w):
                os.close(fd)
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), limits.wall_s)
        except TimeoutError:
            timed_out = True
        finally:
            _kill_all(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            _wait_gone(_read_pipe(info_r))
        completed = _read_pipe(done_r) == token
        stdout, stderr = (_read_capped(f, limits.output_bytes) for f in (out, err))
    code = proc.returncode
    if isolation.kind == "bwrap" and code is not None and code > 128:
        code = 128 - code  # bwrap's init reports a signal as 128 + its number
    return SandboxResult(
        exit_code=code,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        duration_s=round(time.monotonic() - started, 3),
        isolation=isolation.kind,
        completed=completed,
    )


def _read_pipe(fd: int) -> bytes:
    """What was written to a pipe whose writers are all dead by now."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""
    finally:
        os.close(fd)


def _read_capped(f: IO[bytes], cap: int) -> str:
    f.seek(0)
    data = f.read(cap + 1)
    text = data[:cap].decode(errors="replace")
    return text + "\n[output truncated]" if len(data) > cap else text


def _kill_all(pgid: int) -> None:
    """Kill the sandbox's process group: bwrap, whose namespace then dies with everything in
    it, or (unconfined) the code and the children it left in the group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _wait_gone(info: bytes) -> None:
    """Wait until bwrap's init, from its --info-fd report, has exited: by then the kernel
    has killed every process in its pid namespace (setsid survivors, a fork bomb)."""
    if not info:
        return
    status = Path(f"/proc/{json.loads(info)['child-pid']}/stat")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if status.read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                return
        except (OSError, IndexError):
            return
        time.sleep(0.005)


def _user_processes() -> int:
    me = os.getuid()
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                count += entry.stat().st_uid == me
    return count
