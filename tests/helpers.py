"""Small builders shared by tests."""

from __future__ import annotations

import contextlib
import http.server
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from sqlalchemy.engine import Engine

from reflexa.agent.model.server import free_port as free_port  # tests take it from here


def make_model_dir(path: Path) -> Path:
    """A tiny folder that passes `validate_model_dir` (not a loadable model)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    save_file({"w": np.zeros((4, 4), dtype=np.float32)}, str(path / "model.safetensors"))
    (path / "tokenizer.json").write_text("{}")
    return path


def make_lora(
    model_dir: Path,
    out: Path,
    rank: int = 8,
    seed: int = 0,
    modules: tuple[str, ...] = ("q_proj", "v_proj"),
) -> Path:
    """A PEFT LoRA adapter for `model_dir` with random (non-zero) weights, so it changes answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=4 * rank,
        target_modules=list(modules),
        init_lora_weights=False,  # default init is a no-op adapter (B = 0)
        task_type="CAUSAL_LM",
    )
    get_peft_model(base, config).save_pretrained(out)
    return out


def register_adapter(settings: Any, store: Any, folder: Path, version: str,
                     method: str = "sft", base: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A LoRA folder (`make_lora`'s, or any) registered as adapter `version` of the home,
    ready to promote: its metadata says it was trained on `base` (the home's model)."""
    from reflexa.agent.model.client import adapter_name
    from reflexa.trainers.registry import METADATA

    (folder / METADATA).write_text(json.dumps({"base_model": base or settings.model.name}))
    return store.add_adapter(  # type: ignore[no-any-return]
        version=version, name=adapter_name(folder), path=str(folder), parent=None,
        base_model=settings.model.name, method=method, dataset_hash=version, examples=1,
        metrics={},
    )  # fmt: skip


def requests_finished(url: str) -> int:
    """The completions a vLLM server has finished (its Prometheus counter)."""
    import httpx

    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    return round(sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                     if line.startswith("vllm:request_success_total")))  # fmt: skip


def streaming(url: str, done: threading.Event, failures: list[str]) -> int:
    """A chat client streaming one short answer after another through `reflexa serve` at
    `url` until `done`: each reply that is not a 200 ending in [DONE], that carries an error
    event or whose connection fails goes to `failures`. Returns how many it sent."""
    import httpx

    body = {"messages": [{"role": "user", "content": "Say hi."}], "stream": True}
    sent = 0
    while not done.is_set():
        sent += 1
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body,
                              timeout=600) as r:  # fmt: skip
                text = r.read().decode()
        except httpx.HTTPError as e:  # a dropped connection is a failed request
            failures.append(f"{type(e).__name__}: {e}")
            continue
        events = [json.loads(line[6:]) for line in text.splitlines()
                  if line.startswith("data: {")]  # fmt: skip
        failed = [e for e in events if "error" in e or (e.get("reflexa") or {}).get("error")]
        if r.status_code != 200 or "data: [DONE]" not in text or failed:
            failures.append(f"{r.status_code}: {failed or text[-300:]}")
    return sent


class JsonServer:
    """A threaded HTTP server on a free loopback port that answers each request with JSON:
    `answer(method, path, body)` gives the document, or None to close the connection
    without answering (as a server that dies under the request)."""

    def __init__(self, answer: Callable[[str, str, Any], dict[str, Any] | None]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._reply("GET", None)

            def do_POST(self) -> None:
                self._reply(
                    "POST", json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                )

            def _reply(self, method: str, body: Any) -> None:
                doc = answer(method, self.path, body)
                if doc is None:
                    self.close_connection = True
                    return
                raw = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 128  # 40 connections at once: the default backlog of 5 resets some

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def old_store(url: str, revision: str) -> Engine:
    """A database migrated up to `revision` only: a store written by an older Reflexa."""
    from alembic import command
    from alembic.config import Config

    from reflexa.agent.store.db import MIGRATIONS, make_engine

    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()
    return engine


def finished_in_open_runs(db: Path) -> int:
    """Episodes finished so far in a SQLite store's running eval runs (0 while the store is
    still being created: the file exists before its migrations have made the tables)."""
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        try:
            (n,) = conn.execute(
                "select count(*) from episodes e join eval_runs r on e.eval_run_id = r.id "
                "where r.status = 'running' and e.status not in ('running', 'error')"
            ).fetchone()
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise
            return 0
    return int(n)
