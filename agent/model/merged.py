"""The gate's merged server: an adapter merged into the base model's weights, served for one
side of the gate by a temporary vLLM server under the adapter's name.

On a CPU, vLLM answers through a runtime LoRA adapter at 0.4 times the requests per second of
the same model without one, on the gate's long prompts and short answers
(bench/serve_bench.py --gate-like). Merged weights cost one merge and one server start
(about a minute) per side, and are then answered at the base model's speed. One merged
server runs at a time, beside the application's (idle at night); switching sides keeps the
merged weights, which are removed when the gate is done. Its pid file lives under run/gate/, so
`reflexa model stop` finds it even after a killed night.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from reflexa.agent.errors import ReflexaError
from reflexa.agent.model.client import ModelClient
from reflexa.agent.model.connect import ensure_model, external_urls
from reflexa.agent.model.server import (
    ServerRecord,
    beside,
    free_port,
    gate_dir,
    is_healthy,
    route,
    start_server,
    stop_server,
    uses_cpu,
)
from reflexa.agent.settings import Settings

WEIGHTS = (".safetensors", ".bin", ".gguf", ".pt")


def merge_adapter(base: Path, adapter: Path, out: Path) -> None:
    """`adapter` merged into `base`, saved as an HF folder at `out` (in a child process, so
    the weights' memory goes back when it is done)."""
    run = subprocess.run(
        [sys.executable, "-m", __name__, str(base), str(adapter), str(out)],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        tail = "\n".join(run.stderr.strip().splitlines()[-5:])
        raise ReflexaError(f"merging adapter {adapter} into {base} failed:\n{tail}")


def _merge(base: Path, adapter: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for f in base.iterdir():  # tokenizer, chat template, generation config
        if f.is_file() and not f.name.endswith(WEIGHTS) and f.name != "config.json":
            shutil.copy2(f, partial / f.name)
    merged.save_pretrained(partial)
    partial.rename(out)


def serving_as(settings: Settings, weights: Path, name: str) -> Settings:
    """Settings for a server of `weights` answering as model `name`, on a free port and the
    cores a server beside the application's computes on."""
    model = settings.model.model_copy(update={"path": weights, "name": name})
    port, bind = free_port(settings.server.host), beside(settings.server)
    server = settings.server.model_copy(update={"port": port, "replicas": 1, "cpu_bind": bind})
    return settings.model_copy(update={"model": model, "server": server})


def gate_server(settings: Settings) -> MergedServer | None:
    """The gate's merged server where `[cycle] gate_weights` asks for it (auto: on a CPU
    with managed servers), else None: adapters are loaded into the application's server."""
    mode = settings.cycle.gate_weights
    if mode == "auto":
        mode = "merged" if uses_cpu(settings) and not external_urls(settings) else "adapter"
    return MergedServer(settings) if mode == "merged" else None


class MergedServer:
    """One side of the gate at a time: `(name, adapter folder)` → a client for a temporary
    server of those weights merged, answering as model `name`; asked for another adapter, it
    stops the one it runs first (`stop`), keeping its merged weights; `close()` stops it and
    removes them. The promoted adapter's own merged server (`agent/model/promoted.py`), where
    one runs, answers for it instead: nothing is merged or started."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.serving: tuple[str, ServerRecord] | None = None

    def __call__(self, name: str, adapter: Path) -> ModelClient:
        promoted = route(self.settings)  # the promoted adapter's own merged server, if it runs
        if promoted is not None and promoted[0] == name and is_healthy(promoted[1]):
            self.stop()
            s = self.settings
            return ModelClient(promoted[1], name, s.api_key, s.request_timeout_s)
        if self.serving is None or self.serving[0] != name:
            self.stop()
            where = gate_dir(self.settings)
            weights = where / "weights" / name
            if not (weights / "config.json").is_file():
                ensure_model(self.settings)
                merge_adapter(self.settings.model_dir, adapter, weights)
            self.serving = name, start_server(serving_as(self.settings, weights, name),
                                              run_dir=where)  # fmt: skip
        record = self.serving[1]
        return ModelClient(record.url, name, self.settings.api_key, self.settings.request_timeout_s)

    def stop(self) -> None:
        """Stop the server; the merged weights are kept (the gate may come back to that side,
        or the night's sampling hand its adapter to the gate)."""
        stop_server(self.settings, run_dir=gate_dir(self.settings))
        self.serving = None

    def close(self) -> None:
        """Stop the server and remove every merged weights folder: the cycle is over."""
        self.stop()
        shutil.rmtree(gate_dir(self.settings) / "weights", ignore_errors=True)


if __name__ == "__main__":
    _merge(*(Path(a) for a in sys.argv[1:4]))
