"""Runs first inside the sandbox: copy the run's files in, drop to the sandbox's uid, set the
limits, then exec the interpreter on the harness.

Passed to the interpreter as `-c` text (standard library only) with one JSON argument, so
nothing of the host's file system needs to be visible for it. Under bwrap as root it holds
only CAP_SETUID and CAP_SETGID, and gives them up by changing to the fresh uid.
"""

import json
import os
import resource
import sys


def copy_in(stage: str, workdir: str) -> None:
    for name in os.listdir(stage):
        with open(os.path.join(stage, name), "rb") as src:
            data = src.read()
        with open(os.path.join(workdir, name), "wb") as dst:
            dst.write(data)


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
    if config["stage"] is not None:
        copy_in(config["stage"], config["workdir"])
    if config["uid"] is not None:
        os.setgroups([])
        os.setgid(config["uid"])
        os.setuid(config["uid"])
    os.chdir(config["workdir"])
    set_limits(config)
    fds = [str(config[fd]) for fd in ("token_fd", "done_fd", "job_fd")]
    argv = [config["python"], "-I", "-B", "-c", config["harness"], *fds]
    os.execve(config["python"], argv, config["env"])


main()
