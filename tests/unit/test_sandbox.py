"""Hostile code in the real sandbox: contained, nothing left running, the host untouched.

Each case asserts on the host's side: no file, no connection, no survivor, the parent and its
neighbours alive. As root, the last test runs this whole module again as an ordinary user
(uid 65534, through setpriv), where bubblewrap must isolate without privileges. Where no
isolation is available the hostile cases skip and say why, unless
REFLEXA_TEST_REQUIRE_ISOLATION=1 (CI sets it), where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from reflexa.evals.isolation import Isolation, find_isolation
from reflexa.evals.sandbox import SandboxLimits, SandboxResult, SandboxUnavailable, run_python

FAST = SandboxLimits(wall_s=4, cpu_s=2, memory_mb=256, processes=8)
REQUIRED = os.environ.get("REFLEXA_TEST_REQUIRE_ISOLATION") == "1"
ISOLATION = find_isolation()
pytestmark = pytest.mark.skipif(
    ISOLATION.kind == "none" and not REQUIRED, reason=f"no isolation here: {ISOLATION.detail}"
)
REPO = Path(__file__).resolve().parents[2]


def run(code: str, limits: SandboxLimits = FAST) -> SandboxResult:
    result = asyncio.run(run_python(code, limits))
    assert _processes_with(b"# reflexa sandbox harness") == [], "sandboxed processes left running"
    assert result.isolation == "bwrap"
    return result


def _processes_with(marker: bytes) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


@pytest.fixture
def neighbour() -> Iterator[subprocess.Popen[bytes]]:
    """A process of ours beside the sandbox, with a secret on its command line."""
    proc = subprocess.Popen(["/bin/sh", "-c", "sleep 60; : hunter2-cmdline"])
    yield proc
    proc.kill()
    proc.wait()


def test_ordinary_code_runs_in_a_fresh_directory() -> None:
    result = run("import os\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))")
    assert result.ok, result.stderr
    cwd, listing = result.stdout.splitlines()
    assert Path(cwd).name.startswith("reflexa-sbx-")
    assert listing == "['main.py']"  # the tests are not on disk for the code to read
    assert not Path(cwd).exists()  # removed afterwards


def test_files_are_provided_and_failures_reported() -> None:
    code = "import helper\nassert helper.X == 2, 'X is wrong'"
    result = asyncio.run(run_python(code, FAST, {"helper.py": "X = 1"}))
    assert result.exit_code == 1
    assert "AssertionError: X is wrong" in result.stderr


def test_child_processes_work_within_the_limit() -> None:
    result = run("import os\nassert os.system('echo hi; true') == 0")
    assert result.ok, result.stderr
    assert result.stdout == "hi\n"


def test_infinite_loop_is_stopped_by_the_cpu_limit() -> None:
    result = run("while True:\n    pass")
    assert not result.ok
    assert result.exit_code in (-signal.SIGXCPU, -signal.SIGKILL)
    assert result.duration_s < FAST.wall_s + 2


def test_sleeping_forever_hits_the_wall_clock() -> None:
    result = run("import time\ntime.sleep(600)", SandboxLimits(wall_s=1))
    assert result.timed_out and not result.ok
    assert result.duration_s < 3


def test_fork_bomb_is_contained(neighbour: subprocess.Popen[bytes]) -> None:
    result = run(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    )
    assert not result.ok
    assert neighbour.poll() is None


def test_children_that_leave_the_group_do_not_survive() -> None:
    marker = f"reflexa-survivor-{uuid.uuid4().hex}"
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execv('/bin/sh', ['sh', '-c', 'sleep 600; : {marker}'])\n"
        f"os.system('setsid sh -c \"sleep 600; : {marker}\" &')\n"
        "time.sleep(0.2)\n"
        "print('bye')"
    )
    result = run(code)
    assert result.stdout.strip() == "bye"
    assert not result.timed_out
    assert _processes_with(marker.encode()) == []


def test_memory_bomb_is_contained() -> None:
    result = run("x = bytearray(4 * 1024**3)\nprint('allocated')")
    assert not result.ok
    assert "MemoryError" in result.stderr
    assert "allocated" not in result.stdout


def test_writes_outside_the_work_directory_never_reach_the_host(tmp_path: Path) -> None:
    targets = [tmp_path / "pwned.txt", Path(tempfile.gettempdir()) / f"pwned-{uuid.uuid4().hex}"]
    targets += [REPO / f"pwned-{uuid.uuid4().hex}", Path.home() / f"pwned-{uuid.uuid4().hex}"]
    for target in targets:
        result = run(f"open({str(target)!r}, 'w').write('x')\nprint('wrote')")
        assert not target.exists(), target
        if result.ok:  # only where the sandbox has a private, writable path of that name
            assert str(target).startswith(tempfile.gettempdir())


def test_filling_the_disk_stops_at_the_scratch_limit() -> None:
    code = (
        "import os\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(1000):\n"
        "        with open(f'f{i}', 'wb') as f:\n"
        "            f.write(b'0' * (8 * 1024 * 1024))\n"
        "        written += 8\n"
        "except OSError as e:\n"
        "    print(written, e.errno)\n"
    )
    limits = SandboxLimits(wall_s=20, cpu_s=10, scratch_mb=32, file_size_mb=16)
    before = shutil.disk_usage(tempfile.gettempdir()).used
    result = run(code, limits)
    written, errno = (int(x) for x in result.stdout.split())
    assert written <= 32 and errno == 28  # ENOSPC: the tmpfs is full
    assert shutil.disk_usage(tempfile.gettempdir()).used - before < 16 * 1024 * 1024


def test_huge_file_is_stopped_by_the_size_limit() -> None:
    result = run("open('big', 'wb').write(b'0' * (64 * 1024 * 1024))", FAST)
    assert not result.ok
    assert "File too large" in result.stderr or result.exit_code == -signal.SIGXFSZ


NETWORK_ROUTES = {
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)",
    "_socket": "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))",
    "ctypes": (
        "import ctypes, struct\n"
        "libc = ctypes.CDLL(None)\n"
        "fd = libc.socket(2, 1, 0)\n"
        "addr = struct.pack('!HH4s8x', 2, {port}, bytes([127, 0, 0, 1]))\n"
        "assert libc.connect(fd, addr, 16) == 0, 'refused'\n"
    ),
    "child interpreter": (
        "import os, sys\n"
        "child = 'import socket; socket.create_connection((\\'127.0.0.1\\', {port}), timeout=2)'\n"
        "assert os.system(f'{{sys.executable}} -c \"{{child}}\"') == 0\n"
    ),
    "shell": "import os\nassert os.system('bash -c \"echo > /dev/tcp/127.0.0.1/{port}\"') == 0",
}


@pytest.mark.parametrize("route", NETWORK_ROUTES)
def test_network_is_unreachable(route: str) -> None:
    assert _connections(route, lambda code: run_python(code, FAST)) == []


def _connections(route: str, sandbox: Callable[[str], Awaitable[SandboxResult]]) -> list[object]:
    """The connections a host listener accepted while `route`'s code ran in `sandbox`."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(3)
        accepted: list[object] = []
        thread = threading.Thread(target=lambda: _accept(server, accepted))
        thread.start()
        asyncio.run(sandbox(NETWORK_ROUTES[route].format(port=server.getsockname()[1])))
        thread.join()
    assert _processes_with(b"# reflexa sandbox harness") == []
    return accepted


@pytest.mark.parametrize("route", ["child interpreter", "shell"])
def test_those_routes_do_reach_the_network_unconfined(route: str) -> None:
    """The routes past the audit hook are real: without the network namespace they connect."""
    none = Isolation("none", "test")
    assert _connections(route, lambda code: run_python(code, FAST, isolation=none,
                                                       allow_unconfined=True))  # fmt: skip


def _accept(server: socket.socket, accepted: list[object]) -> None:
    with contextlib.suppress(OSError):  # the timeout: nobody connected
        accepted.append(server.accept())


def test_parent_secrets_are_out_of_reach(
    monkeypatch: pytest.MonkeyPatch, neighbour: subprocess.Popen[bytes]
) -> None:
    monkeypatch.setenv("REFLEXA_TEST_SECRET", "hunter2-env")
    code = (
        "import os\n"
        "print(sorted(os.environ))\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        f"pids += [str(os.getppid()), '1', '{os.getpid()}', '{neighbour.pid}']\n"
        "print('pids', len(set(pids)))\n"
        "for pid in pids:\n"
        "    for what in ('environ', 'cmdline'):\n"
        "        try:\n"
        "            print(open(f'/proc/{pid}/{what}', 'rb').read())\n"
        "        except OSError as e:\n"
        "            print('denied', e.errno)\n"
    )
    result = run(code)
    assert result.ok, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert "REFLEXA_TEST_SECRET" not in result.stdout


def test_home_directories_are_not_visible() -> None:
    result = run(
        "import os\nfor d in ('/root', '/home'):\n"
        "    print(d, sorted(os.listdir(d)) if os.path.isdir(d) else None)"
    )
    assert result.ok, result.stderr
    for line in result.stdout.splitlines():
        # Only the path down to the interpreter, where it lives under /root (pyenv).
        assert line.split(" ", 1)[1] in ("None", "[]", "['.pyenv']"), line


def test_killing_the_parent_and_neighbours_fails(neighbour: subprocess.Popen[bytes]) -> None:
    code = (
        "import os, signal\n"
        f"for pid in (os.getppid(), {os.getpid()}, {neighbour.pid}, -1):\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError as e:\n"
        "        print('denied', pid, e.errno)\n"
    )
    run(code)
    assert neighbour.poll() is None  # and this process, the parent, is still here


def test_output_is_capped() -> None:
    result = run("print('x' * 1_000_000)", SandboxLimits(output_bytes=1000))
    assert len(result.stdout) < 1100
    assert result.stdout.endswith("[output truncated]")


@pytest.mark.skipif(os.geteuid() != 0, reason="a fresh uid is for runs as root")
def test_root_runs_under_a_fresh_uid() -> None:
    result = run("import os\nprint(os.getuid())")
    assert int(result.stdout) >= 200_000


def test_many_sandboxes_at_once() -> None:
    async def many() -> list[SandboxResult]:
        return await asyncio.gather(*(run_python(f"print({i} * 2)", FAST) for i in range(8)))

    results = asyncio.run(many())
    assert [r.stdout.strip() for r in results] == [str(i * 2) for i in range(8)]


def test_without_isolation_model_code_is_refused_unless_allowed() -> None:
    none = Isolation("none", "no bwrap found")
    with pytest.raises(SandboxUnavailable, match=r"no bwrap found.*allow_unconfined"):
        asyncio.run(run_python("print('ran')", FAST, isolation=none))
    allowed = asyncio.run(run_python("print('ran')", FAST, isolation=none, allow_unconfined=True))
    assert allowed.ok and allowed.stdout.strip() == "ran"
    assert allowed.isolation == "none"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the module as another user")
def test_the_hostile_set_holds_for_an_ordinary_user() -> None:
    """This module again, as uid 65534: bwrap isolates through user namespaces alone."""
    python = _python_for_others()
    with tempfile.TemporaryDirectory() as scratch:
        os.chmod(scratch, 0o755)
        packages = Path(scratch, "reflexa")
        packages.mkdir()
        for name in ("agent", "graphs", "trainers", "evals"):
            (packages / name).symlink_to(REPO / name)
        path = f"{scratch}:{sysconfig.get_paths()['purelib']}"
        user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "PYTHONPATH": path}
        env["REFLEXA_TEST_REQUIRE_ISOLATION"] = "1"
        test = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={REPO}"]
        test += [__file__, "-k", "not ordinary_user and not fresh_uid"]
        done = subprocess.run([*user, *test], env=env, cwd=scratch, capture_output=True, text=True)
    if done.returncode != 0 and "No module named" in done.stdout + done.stderr and not REQUIRED:
        pytest.skip(f"the user cannot import the test's packages: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-500:]


def _python_for_others() -> str:
    """This interpreter if every user may run it; else the system's of the same version
    (pyenv's lives under /root, closed to others)."""
    mine = Path(os.path.realpath(sys.executable))
    if all(os.stat(p).st_mode & 0o001 for p in mine.parents) and os.stat(mine).st_mode & 0o001:
        return str(mine)
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        pytest.skip(f"no interpreter other users can run ({mine} is closed, {system} absent)")
    return str(system)
