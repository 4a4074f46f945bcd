"""`reflexa schedule run`: the schedule survives a restart of the scheduler and runs cycles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reflexa.agent.settings import Settings
from reflexa.agent.store import Store

pytestmark = pytest.mark.integration


def scheduler(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "reflexa.agent", "schedule", "run"],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_schedule_survives_a_restart_and_runs_a_cycle(tmp_path: Path) -> None:
    env = dict(os.environ)  # REFLEXA_HOME: the test's own empty home
    cli = [sys.executable, "-m", "reflexa.agent", "schedule"]
    added = subprocess.run([*cli, "add", "--cron", "* * * * *", "--json"], env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    job = json.loads(added.stdout)
    log = tmp_path / "scheduler.log"
    first = scheduler(env, log)
    time.sleep(3)
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=30)
    listed = subprocess.run([*cli, "list", "--json"], env=env, capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert [j["id"] for j in json.loads(listed.stdout)] == [job["id"]]
    second = scheduler(env, log)
    try:
        deadline = time.monotonic() + 150
        cycles: list[dict] = []
        # Done when the cycle is recorded and the scheduler has logged its end.
        while time.monotonic() < deadline and not (cycles and "cycle finished" in log.read_text()):
            time.sleep(2)
            with Store.open(Settings().database) as store:
                cycles = [c for c in store.cycles() if c["status"] != "running"]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert cycles, log.read_text()[-2000:]
    assert cycles[0]["trigger"] == "schedule"
    assert cycles[0]["status"] == "skipped"  # an empty store: nothing to train on
    assert "cycle finished" in log.read_text()
