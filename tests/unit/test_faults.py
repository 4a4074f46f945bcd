"""Faults while recording: a full disk, a database server restarted mid-run. Each must end
in a clear error, leave nothing half-written, and let the next episode succeed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reflexa.evals.isolation import find_isolation

REPO = Path(__file__).resolve().parents[2]

# Runs under bwrap with $REFLEXA_HOME on a 4 MiB tmpfs: a real full disk (ENOSPC).
FULL_DISK = textwrap.dedent(
    """
    import asyncio, json, os, sqlite3
    from reflexa.agent.app.agent import EpisodeRequest
    from reflexa.agent.errors import ReflexaError
    from tests.unit.test_episodes import NUMBER, with_agent

    home = os.environ["REFLEXA_HOME"]
    filler = os.path.join(home, "filler")

    async def body(agent):
        out = {"first": (await agent.run(EpisodeRequest("2+2?", NUMBER))).status}
        with open(filler, "wb", buffering=0) as f:  # fill the disk to the last block
            try:
                while True:
                    f.write(b"0" * 65536)
                    f.flush()
            except OSError as e:
                out["filler_errno"] = e.errno
        try:
            result = await agent.run(EpisodeRequest("3+1?", NUMBER))
            out["full"] = {"status": result.status, "error": result.error}
        except ReflexaError as e:
            out["full"] = {"raised": str(e)}
        os.remove(filler)
        out["after"] = (await agent.run(EpisodeRequest("1+3?", NUMBER))).status
        return out

    out = asyncio.run(with_agent(["4", "4", "4"], body))
    with sqlite3.connect(os.path.join(home, "reflexa.db")) as db:
        out["integrity"] = db.execute("pragma integrity_check").fetchone()[0]
        out["episodes"] = db.execute(
            "select e.prompt, e.status, e.n_attempts, count(a.id) from episodes e "
            "left join attempts a on a.episode_id = e.id group by e.id order by e.created_at"
        ).fetchall()
    print(json.dumps(out))
    """
)


def test_a_full_disk_while_recording_is_a_clear_error_and_nothing_is_half_written(
    tmp_path: Path,
) -> None:
    isolation = find_isolation()
    if isolation.kind != "bwrap":
        pytest.skip(f"a real full disk needs a small tmpfs, through bwrap: {isolation.detail}")
    home = tmp_path / "small"
    home.mkdir()
    bwrap = [isolation.detail, "--dev-bind", "/", "/", "--size", str(4 << 20), "--tmpfs", str(home)]
    if os.geteuid() != 0:
        bwrap.insert(1, "--unshare-user")  # a mount of our own needs a user namespace
    env = {"PATH": "/usr/bin:/bin", "REFLEXA_HOME": str(home), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [*bwrap, sys.executable, "-c", FULL_DISK],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["filler_errno"] == 28  # ENOSPC: the disk really was full
    assert out["first"] == "passed" and out["after"] == "passed"
    full = out["full"]
    message = full.get("raised") or full.get("error") or ""
    assert "database or disk is full" in message, full
    assert "Traceback" not in message
    assert out["integrity"] == "ok"
    for prompt, status, n_attempts, attempts in out["episodes"]:
        if status == "running":  # its outcome could not be written: none of it was
            assert (prompt, attempts) == ("3+1?", 0)
        else:
            assert n_attempts == attempts, (prompt, status)  # the outcome is whole
    assert [e[0] for e in out["episodes"]].count("1+3?") == 1


@pytest.mark.parametrize("fault", ["stop", "restart"])
def test_postgres_going_down_mid_run_fails_that_episode_clearly_and_the_next_succeeds(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """The server goes down while an episode is in flight (the model is answering). Stopped
    until the episode ends: it fails with one clear error. Restarted at once: the episode
    rides it out. Either way the next episode is recorded whole."""
    ctl = os.environ.get("REFLEXA_TEST_POSTGRES_CTL")  # e.g. "pg_ctlcluster 15 main"
    if not ctl:
        pytest.skip("set REFLEXA_TEST_POSTGRES_CTL to a command that takes stop / start")
    import asyncio

    from reflexa.agent.app.agent import EpisodeRequest
    from reflexa.agent.errors import ReflexaError
    from tests.unit.test_episodes import NUMBER, with_agent

    monkeypatch.setenv("REFLEXA_DATABASE_URL", postgres_url)

    def server_goes_down_mid_answer() -> str:
        subprocess.run([*ctl.split(), fault], check=True)
        return "4"

    async def body(agent):  # type: ignore[no-untyped-def]
        try:
            first = await agent.run(EpisodeRequest("2+2?", NUMBER))
            outcome = f"{first.status}: {first.error}"
        except ReflexaError as e:
            outcome = f"raised: {e}"
        subprocess.run([*ctl.split(), "start"], capture_output=True)  # (already up: fine)
        second = await agent.run(EpisodeRequest("3+1?", NUMBER))
        return outcome, second, agent.store.episode(second.episode_id)

    script = [server_goes_down_mid_answer, "4"]
    try:
        outcome, second, recorded = asyncio.run(with_agent(script, body))
    finally:
        subprocess.run([*ctl.split(), "start"], capture_output=True)  # up, whatever happened
    if fault == "stop":
        assert outcome.startswith("raised: the store (postgresql"), outcome
        assert "Connection refused" in outcome and "Traceback" not in outcome
    else:
        assert outcome == "passed: None"
    assert second.status == "passed"
    assert recorded["status"] == "passed" and recorded["n_attempts"] == 1
