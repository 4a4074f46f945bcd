"""Runs inside the sandbox's new process: confine this process, then exec the interpreter.

Invoked by `evals.sandbox` as `python -I -S _sandbox_launch.py CONFIG_JSON`. Standard library
only. When started as root it also gets a private network (loopback down), a private /tmp
and a fresh, unprivileged uid, so RLIMIT_NPROC really applies (the kernel exempts uid 0)
and nothing outside the work directory is writable.
"""

import ctypes
import json
import os
import resource
import sys

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        sys.stderr.write(f"sandbox: {what} failed: {os.strerror(err)}\n")
        os._exit(125)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    check(
        libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def blocked_ancestor(path: str) -> str | None:
    """The first directory above `path` that other users cannot enter (like /root)."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        parent = "/" + "/".join(parts[:i])
        if not os.stat(parent).st_mode & 0o001:
            return parent
    return None


def confine_as_root(config: dict) -> None:
    check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Keep handles on what must stay visible before tmpfs mounts hide their paths.
    keep = {path: os.open(path, os.O_PATH) for path in (config["workdir"], config["prefix"])}
    covered = {"/tmp", "/var/tmp", "/dev/shm"}
    if (blocked := blocked_ancestor(config["prefix"])) is not None:
        covered.add(blocked)  # e.g. /root: hidden, except the interpreter's own prefix
    for path in sorted(covered):
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
    for path, fd in keep.items():
        if any(path.startswith(c + "/") for c in covered):
            os.makedirs(path, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)
    uid = config["uid"]
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def set_limits(config: dict) -> None:
    mib = 1 << 20
    limits = {
        resource.RLIMIT_CPU: (config["cpu_s"], config["cpu_s"] + 1),
        resource.RLIMIT_AS: (config["memory_mb"] * mib,) * 2,
        resource.RLIMIT_FSIZE: (config["file_size_mb"] * mib,) * 2,
        resource.RLIMIT_NPROC: (config["nproc"],) * 2,
        resource.RLIMIT_NOFILE: (64, 64),
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, value in limits.items():
        resource.setrlimit(which, value)


def main() -> None:
    config = json.loads(sys.argv[1])
    if config["uid"] is not None:
        confine_as_root(config)
    os.chdir(config["workdir"])
    set_limits(config)
    fds = [str(config["token_fd"]), str(config["done_fd"])]
    argv = [config["python"], "-I", "-B", "-c", config["harness"], *fds, "job.json"]
    os.execve(config["python"], argv, config["env"])


main()
