"""The persisted schedule: cron parsing, add/list/remove, and the crontab/systemd forms."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from reflexa.agent.cli import cli
from reflexa.trainers.errors import TrainerError
from reflexa.trainers.schedule import parse_cron, systemd_units


def test_weekdays_follow_cron_numbering_sunday_is_zero() -> None:
    start = datetime(2026, 11, 23, 12, 0)  # a Monday
    monday = parse_cron("0 2 * * 1").get_next_fire_time(None, start.astimezone())
    sunday = parse_cron("0 2 * * 0").get_next_fire_time(None, start.astimezone())
    weekdays = parse_cron("30 1 * * 1-5").get_next_fire_time(None, start.astimezone())
    assert monday is not None and monday.strftime("%a %H:%M") == "Mon 02:00"
    assert sunday is not None and sunday.strftime("%a") == "Sun"
    assert weekdays is not None and weekdays.strftime("%a %H:%M") == "Tue 01:30"


@pytest.mark.parametrize(
    ("expr", "message"),
    [("bogus", "expected 5 fields"), ("61 2 * * *", "higher than the maximum"),
     ("0 2 * *", "expected 5 fields"), ("0 25 * * *", "hour")],
)  # fmt: skip
def test_bad_cron_expressions_are_refused(expr: str, message: str) -> None:
    with pytest.raises(TrainerError, match="cron expression") as e:
        parse_cron(expr)
    assert message in str(e.value)


def test_systemd_calendar() -> None:
    units = systemd_units("30 2 * * 1-5", ["/usr/bin/reflexa"], {"REFLEXA_HOME": "/h"})
    assert "OnCalendar=Mon..Fri *-*-* 02:30:00" in units
    assert "ExecStart=/usr/bin/reflexa cycle --json" in units
    assert "Environment=REFLEXA_HOME=/h" in units and "Persistent=true" in units


def test_add_list_remove_persist_across_processes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REFLEXA_HOME", str(tmp_path))
    runner = CliRunner()
    bad = runner.invoke(cli, ["schedule", "add", "--cron", "every night"])
    assert bad.exit_code == 1 and "cron expression 'every night'" in bad.output
    added = runner.invoke(cli, ["schedule", "add", "--cron", "0 2 * * *", "--json"])
    assert added.exit_code == 0, added.output
    job = json.loads(added.stdout)
    assert job["crontab"].startswith("0 2 * * * REFLEXA_HOME=")
    assert "/reflexa cycle --json >> " in job["crontab"]
    # A fresh process (as after a restart) reads the same job from the database.
    listed = subprocess.run(
        [sys.executable, "-m", "reflexa.agent", "schedule", "list", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    [again] = json.loads(listed.stdout)
    assert again["id"] == job["id"] and again["cron"] == "0 2 * * *"
    assert datetime.fromisoformat(again["next_run"]).strftime("%H:%M") == "02:00"
    missing = runner.invoke(cli, ["schedule", "remove", "nope"])
    assert missing.exit_code == 1 and "no scheduled job 'nope'" in missing.output
    assert runner.invoke(cli, ["schedule", "remove", job["id"]]).exit_code == 0
    assert json.loads(runner.invoke(cli, ["schedule", "list", "--json"]).stdout) == []


def test_the_printed_forms_run_with_the_settings_file_this_command_read(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("REFLEXA_HOME", str(tmp_path))
    settings = tmp_path / "reflexa.toml"
    settings.write_text("[cycle]\nmax_drop = 0.05\n")
    runner = CliRunner()
    for argv in (["--config", str(settings)], []):
        if not argv:
            monkeypatch.setenv("REFLEXA_CONFIG", str(settings))
        added = runner.invoke(cli, [*argv, "schedule", "add", "--cron", "0 2 * * *", "--json"])
        assert added.exit_code == 0, added.output
        job = json.loads(added.stdout)
        assert f"--config {settings} cycle --json" in job["crontab"]
        assert f"--config {settings} cycle --json" in job["systemd"]
