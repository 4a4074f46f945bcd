# reflexa sandbox harness
"""Runs inside the sandbox: the item's prefix, the model's code, then the tests, and proves
to the parent that the tests ran to their end.

Passed to the interpreter as `-c` text (standard library only) with three file descriptors:
`python -I -B -c HARNESS TOKEN_FD DONE_FD JOB_FD` (JOB_FD: prefix, code and tests as JSON).
The parent writes a random token into TOKEN_FD; the harness reads it before any model code
runs and writes it to DONE_FD only after the last test line has run. Exit status means
nothing: an answer that exits early (`os._exit(0)`, `SystemExit`, a signal handler, atexit)
never gets there.

What keeps the token away from the model's code, which runs in this same interpreter:
- the token lives only in a local variable of `_run`, and an audit hook (which cannot be
  removed) refuses every route to another frame's locals: `sys._getframe`,
  `sys._current_frames`, traceback/generator/coroutine frames, trace and profile hooks,
  the garbage collector's object lists, ctypes, and `/proc/*/mem`;
- the process is made non-dumpable, so no child process can read its memory either;
- every function the harness calls after the model's code was taken beforehand, so a
  patched `os.write` or `builtins.exec` never sees the token.
What keeps the tests honest: they run with a fresh copy of the builtins, trace and profile
hooks are refused, and any module the tests import is imported before the model's code
and must be unchanged after it (`math.isclose = lambda *a: True` fails the run).
"""

import ast
import builtins
import json
import os
import sys

FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
DENIED = frozenset({
    "sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents",
})  # fmt: skip
NETWORK = frozenset({
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
    "socket.getaddrinfo", "socket.gethostbyname",
})  # fmt: skip
PR_SET_DUMPABLE = 4


def _install_hook(strict):
    def hook(event, args):
        if event in NETWORK:
            raise PermissionError("network access is not allowed in the sandbox")
        if not strict[0]:
            return
        if (
            event in DENIED
            or (event == "object.__getattr__" and args[1] in FRAME_ATTRS)
            or (event == "import" and args[0] in ("ctypes", "_ctypes"))
            or (event == "open" and _is_memory(args[0]))
        ):
            raise PermissionError(f"{event} is not allowed in the sandbox")

    sys.addaudithook(hook)


def _is_memory(path):
    """A process's memory file (`/proc/self/mem`, also through a symlink)."""
    if not isinstance(path, (str, bytes)):
        return False
    return os.path.realpath(os.fsdecode(path)).endswith("/mem")


def _not_dumpable():
    """No other process of this uid may read our memory (/proc/PID/mem, ptrace); ctypes is
    then forgotten, so the model's code must import it again, which the hook refuses."""
    import ctypes

    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]


def _test_modules(tests):
    """The modules the tests import, imported now, with their attributes as they are."""
    names = set()
    for node in ast.walk(ast.parse(tests)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    modules = {}
    for name in sorted(names):
        try:
            __import__(name)
        except BaseException:
            continue
        module = sys.modules[name]
        modules[name] = (module, dict(vars(module)))
    return modules


def _patched(modules):
    """The first test module the code replaced or changed, or None."""
    for name, (module, attrs) in modules.items():
        if sys.modules.get(name) is not module:
            return f"the code replaced the module {name!r}, which the tests use"
        now = vars(module)
        for key, value in attrs.items():
            if now.get(key) is not value:
                return f"the code changed {name}.{key}, which the tests use"
    return None


def _run():
    token_fd, done_fd, job_fd = (int(arg) for arg in sys.argv[1:4])
    read, write, close, exit_now = os.read, os.write, os.close, os._exit
    token = read(token_fd, 64)
    close(token_fd)
    with open(job_fd, encoding="utf-8") as f:  # closes it: the code cannot read the tests
        job = json.load(f)
    _not_dumpable()
    strict = [True]
    _install_hook(strict)
    clean = dict(vars(builtins))
    flush = (sys.stdout.flush, sys.stderr.flush)
    run_code, build, copy = exec, compile, dict
    modules = _test_modules(job["tests"]) if job["tests"] else {}
    namespace = {"__name__": "__main__", "__file__": "main.py", "__builtins__": copy(clean)}
    sys.argv = ["main.py"]
    sys.path.insert(0, ".")  # -I leaves the script's directory off the path
    failure = None
    try:
        for name, source in (("prefix.py", job["prefix"]), ("main.py", job["code"])):
            if source:
                run_code(build(source, name, "exec"), namespace)
        changed = _patched(modules)
        if changed is not None:
            raise RuntimeError(changed)
        if job["tests"]:
            namespace["__builtins__"] = copy(clean)
            run_code(build(job["tests"], "tests.py", "exec"), namespace)
    except BaseException as e:  # SystemExit too: exiting early is failing
        failure = e
    if failure is None:
        for f in flush:
            f()
        write(done_fd, token)
        exit_now(0)
    # Failed: the token goes first, then the traceback may be printed.
    close(done_fd)
    token = None
    strict[0] = False
    if isinstance(failure, SystemExit):
        code = failure.code
        sys.stderr.write(f"SystemExit({code!r}): exited before the tests ran to their end\n")
        status = code if isinstance(code, int) and code else 1
    else:
        import traceback

        traceback.print_exception(failure)
        status = 1
    for f in flush:
        f()
    exit_now(status)


_run()
