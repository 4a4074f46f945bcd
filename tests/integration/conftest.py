"""One real vLLM server on the bundled model for the whole test session.

It is prepared and started through the real `reflexa` command; a test that needs it running
gets it restarted on demand (after the stop test, say) through the same library call the
CLI uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reflexa.agent.model.client import ModelClient
from reflexa.agent.model.connect import connect
from reflexa.agent.settings import load_settings
from tests.helpers import free_port

REFLEXA = str(Path(sys.executable).parent / "reflexa")


def run_reflexa(
    *args: str, env: dict[str, str], check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [REFLEXA, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"reflexa {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


@dataclass(frozen=True)
class Session:
    home: Path
    port: int
    env: dict[str, str]
    prepared: dict[str, object]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_reflexa(*args, env=self.env, check=check)

    @property
    def model_dir(self) -> Path:
        return Path(str(self.prepared["path"]))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The test that stops the server goes last, so the others share one start-up.
    items.sort(key=lambda item: item.get_closest_marker("stops_server") is not None)


@pytest.fixture(scope="session")
def vllm_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    home = tmp_path_factory.mktemp("reflexa-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLEXA_")}
    env |= {"REFLEXA_HOME": str(home), "REFLEXA_SERVER__PORT": str(port)}
    prepared = json.loads(run_reflexa("model", "prepare", "--json", env=env).stdout)
    run_reflexa("model", "serve", env=env)
    yield Session(home=home, port=port, env=env, prepared=prepared)
    run_reflexa("model", "stop", env=env)


@pytest.fixture
def server(vllm_session: Session, monkeypatch: pytest.MonkeyPatch) -> ModelClient:
    """A client for the session's server, restarted if a test stopped it."""
    for key, value in vllm_session.env.items():
        if key.startswith("REFLEXA_"):
            monkeypatch.setenv(key, value)
    return connect(load_settings())
