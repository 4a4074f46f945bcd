"""One nightly job across hosts: on one PostgreSQL database, the cycle's advisory lock lets one
cycle run and the others skip, and a holder that crashes frees it. Each "host" is a process
with its own REFLEXA_HOME (so its own file lock) on the shared database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from reflexa.agent.store import Store
from reflexa.trainers.schedule import scheduled_cycle

HOLD = """
import sys, time
from reflexa.agent.store import Store
from reflexa.trainers.errors import CycleBusy
store = Store.open(sys.argv[1])
try:
    with store.cycle_lock():
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
except CycleBusy as e:
    print(f"busy: {e}", flush=True)
"""


def host(tmp_path: Path, name: str, database: str) -> dict[str, str]:
    return os.environ | {"REFLEXA_HOME": str(tmp_path / name), "REFLEXA_DATABASE_URL": database}


def hold(database: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", HOLD, database, str(seconds)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def cycle(env: dict[str, str]) -> tuple[int, dict]:
    run = subprocess.run([sys.executable, "-m", "reflexa.agent", "cycle", "--json"],
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    return run.returncode, json.loads(run.stdout)


def test_of_two_hosts_started_together_exactly_one_holds_the_cycle(postgres_url: str) -> None:
    Store.open(postgres_url).close()  # migrated once, so neither waits on the other for it
    first, second = hold(postgres_url, 8), hold(postgres_url, 8)
    said = sorted(p.communicate(timeout=60)[0].strip() for p in (first, second))
    assert said[0].startswith("busy: another cycle is running"), said
    assert "advisory lock is held by backend" in said[0]
    assert said[1] == "held"


def test_a_busy_night_is_skipped_unrecorded_and_a_crashed_holder_frees_it(
    postgres_url: str, tmp_path: Path
) -> None:
    Store.open(postgres_url).close()
    holder = hold(postgres_url, 300)  # host A, mid-cycle
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    code, out = cycle(host(tmp_path, "b", postgres_url))
    assert code == 0 and out["status"] == "skipped", out
    assert "another cycle is running" in out["reason"]
    with Store.open(postgres_url) as store:
        assert store.cycles() == []  # host A's night is A's to record
    holder.send_signal(signal.SIGKILL)  # host A crashes
    holder.wait(timeout=30)
    deadline = time.monotonic() + 30  # the server notices the dropped session at once, or soon
    while (out := cycle(host(tmp_path, "b", postgres_url))[1])["reason"].startswith("another"):
        assert time.monotonic() < deadline, out
    assert out["status"] == "skipped" and "0 sft examples" in out["reason"]  # it ran
    with Store.open(postgres_url) as store:
        [row] = store.cycles()
    assert row["status"] == "skipped"


def test_the_scheduler_logs_what_the_cycle_said(tmp_path: Path) -> None:
    said = {"status": "skipped", "reason": "another cycle is running (backend 7 from 10.0.0.2)"}
    command = [sys.executable, "-c", f"print({json.dumps(json.dumps(said))})"]
    assert scheduled_cycle(command) == (
        "skipped: another cycle is running (backend 7 from 10.0.0.2), exit status 0"
    )
    assert scheduled_cycle([sys.executable, "-c", "raise SystemExit(3)"]) == "exit status 3"
