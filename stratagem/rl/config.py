"""GRPOConfig: every knob of a training run, with TRL's names and defaults where TRL has them.

A run is fully described by its config: ``config.yaml`` in the run directory is the config
it ran with, and ``stratagem train --config that.yaml`` runs it again. Fields TRL does not
have (the environment, the episodes each program plays, the sandbox limits, LoRA settings
under TRL's ``ModelConfig`` names) are stratagem's own. Unknown fields and bad values fail
here, before a model is loaded, with a message that names the field and what it accepts.

Defaults are TRL's (``learning_rate=1e-6``, ``loss_type="dapo"``, ``beta=0``, ...), tuned for
billion-parameter models. The embedded default run, what ``stratagem train`` does with no
``--config``, overrides some of them in ``DEFAULT_RUN`` for the small built-in model.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stratagem.agents.policy import SamplingParams
from stratagem.agents.rewards import Rubric
from stratagem.rl.losses import LOSS_TYPES, LossSettings


class ConfigError(ValueError):
    """A config that cannot run: the message names each bad field and what it accepts."""


class GRPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, protected_namespaces=())

    # What to train and where.
    model: str = Field(
        "default",
        description="a local directory or hub id of a causal LM, or 'default' (embedded; "
        "'default-gpt-oss': the same as a gpt-oss, for GPUs)",
    )
    env: str = Field("2048", description="an environment name or the path of its openenv.yaml")
    env_params: dict[str, Any] = Field(default_factory=dict, description="constructor parameters of the environment")
    output_dir: str | None = Field(None, description="the run directory (default runs/<timestamp>)")
    seed: int = Field(42, ge=0, description="seeds sampling, LoRA init and the episode seeds")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the model runs")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="model weights' dtype")
    attn_implementation: str | None = Field(
        None, description="'stratagem' (our kernels), 'sdpa', 'eager', ...; None: 'stratagem' on CUDA in bf16/fp16"
    )

    # Steps and batches (TRL semantics: one optimizer step sees per_device_train_batch_size *
    # gradient_accumulation_steps completions per process (times torchrun's processes), in groups of num_generations).
    max_steps: int = Field(100, ge=1, description="optimizer steps")
    num_generations: int = Field(8, ge=2, description="completions per prompt (a GRPO group)")
    per_device_train_batch_size: int = Field(8, ge=1, description="completions per micro-batch")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    num_iterations: int = Field(1, ge=1, description="updates per generated batch (mu in the GRPO paper)")

    # Sampling.
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, description="keep the k most likely tokens (None: all)")
    min_p: float | None = Field(None, ge=0, le=1, description="drop tokens below min_p * p(best)")
    max_prompt_length: int | None = Field(
        512,
        ge=1,
        description="keep the prompt's last tokens, with a warning when it cuts (None: the whole prompt, "
        "as far as the model's context less max_completion_length allows)",
    )
    max_completion_length: int = Field(256, ge=1)
    sampling_batch_size: int | None = Field(
        None,
        ge=1,
        description="completions decoded at once (None: the whole step's batch, the fastest); the KV cache grows "
        "with it, so lower it to cap sampling's memory",
    )

    # The loss (see losses.py).
    loss_type: Literal[LOSS_TYPES] = "dapo"  # type: ignore[valid-type]
    importance_sampling_level: Literal["token", "sequence"] = Field("token", description="sequence = GSPO")
    epsilon: float = Field(0.2, gt=0)
    epsilon_high: float | None = Field(None, gt=0, description="upper clip (DAPO: 0.28); None: epsilon")
    delta: float | None = Field(None, gt=1, description="two-sided clipping: cap on the unclipped ratio")
    beta: float = Field(0.0, ge=0, description="KL coefficient; the reference is the model without the adapter")
    scale_rewards: Literal["group", "batch", "none"] = "group"
    mask_truncated_completions: bool = False
    sapo_temperature_pos: float = Field(1.0, gt=0, description="SAPO's gate temperature where the advantage is > 0")
    sapo_temperature_neg: float = Field(1.05, gt=0, description="SAPO's gate temperature where the advantage is <= 0")
    vespo_k_pos: float = Field(2.0, ge=0, description="VESPO's power k where the advantage is >= 0")
    vespo_lambda_pos: float = Field(3.0, gt=0, description="VESPO's decay lambda where the advantage is >= 0")
    vespo_k_neg: float = Field(3.0, ge=0, description="VESPO's power k where the advantage is < 0")
    vespo_lambda_neg: float = Field(2.0, gt=0, description="VESPO's decay lambda where the advantage is < 0")

    # Optimizer and schedule.
    learning_rate: float = Field(1e-6, gt=0)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    warmup_steps: int = Field(0, ge=0, description="overrides warmup_ratio when > 0")
    weight_decay: float = Field(0.0, ge=0)
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_epsilon: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = False
    activation_offload: bool = Field(
        False,
        description="keep the activations saved for backward in host memory "
        "until backward needs them: less GPU memory, more transfers",
    )
    logprob_chunk_size: int = Field(1024, ge=1, description="rows per chunk of the log-prob computation")

    # LoRA (TRL's ModelConfig names).
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(8, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target_modules: list[str] = Field(default_factory=lambda: ["all-linear"])

    # Rewards: the environment's episodes and the rubric.
    num_episodes: int = Field(4, ge=1, description="episodes each program plays, on seeds shared by its group")
    reward_weights: dict[str, float] | None = Field(None, description="rubric weights by function (None: default)")
    best_episodes: int = Field(
        0,
        ge=0,
        description="fresh episodes on which a step's top program must confirm its reward before it is kept as "
        "the best (0: its batch reward decides)",
    )
    workers: int | None = Field(None, ge=1, description="sandbox worker processes (None: one per core)")
    move_timeout: float = Field(1.0, gt=0, description="seconds per call of a program")
    episode_timeout: float = Field(60.0, gt=0, description="seconds per episode")
    memory_mb: int = Field(512, ge=16, description="address space a program may add")
    cpu_seconds: float = Field(120.0, gt=0, description="CPU seconds per program")
    allow_weaker_sandbox: bool = Field(
        False,
        description="run programs even where the kernel lacks a sandbox layer "
        "(seccomp, Landlock, namespaces); the run records which (sandbox.json)",
    )
    # Scaling out: where programs are played, never what they score (the results are the same).
    url: list[str] | None = Field(
        None,
        description="environment servers to play on, as one pool with health checks and failover (the flag "
        "repeated, or URLs separated by commas; None: in-process)",
    )
    ray: str | None = Field(
        None,
        description="play on a Ray cluster, one sandbox pool per node (workers: per node): auto, local, HOST:PORT "
        "or ray://HOST:PORT; needs pip install -e '.[ray]'",
    )

    # Logging and checkpoints.
    logging_steps: int = Field(1, ge=1, description="print and log metrics every N steps")
    save_steps: int = Field(500, ge=1, description="checkpoint every N steps (and at the end)")
    save_total_limit: int | None = Field(None, ge=1, description="checkpoints to keep (None: all)")
    save_merged: bool = Field(False, description="also save the adapter merged into the weights at the end")
    log_completions: bool = Field(True, description="write every step's completions to completions/")
    record_best: bool = Field(True, description="record the episodes of each new best program to replays/")

    # Several processes (torchrun; rl/distributed.py).
    ddp_timeout: int = Field(
        1800,
        ge=1,
        description="seconds a rank waits for the others at a collective before it fails, so one that died or "
        "hangs cannot hang the rest (TRL's name and default)",
    )

    @field_validator("model", "env", "output_dir", mode="before")
    @classmethod
    def _names_are_text(cls, value: Any) -> Any:
        """``env: 2048`` in YAML is the number 2048; a name is a name however YAML types it."""
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("env_params", mode="before")
    @classmethod
    def _game_is_text(cls, value: Any) -> Any:
        game = value.get("game") if isinstance(value, dict) else None
        if isinstance(game, (int, float)) and not isinstance(game, bool):
            return {**value, "game": str(game)}
        return value

    @field_validator("url", mode="before")
    @classmethod
    def _urls_are_server_urls(cls, value: Any) -> Any:
        """A URL alone is a pool of one; each must be a server's (checked now, not at the first episode)."""
        from pydantic_core import PydanticCustomError

        urls = [value] if isinstance(value, str) else value
        for url in urls if isinstance(urls, list) else ():
            if not (isinstance(url, str) and url.startswith(("http://", "https://", "ws://", "wss://"))):
                raise PydanticCustomError("server_url", f"expected server URLs such as http://127.0.0.1:8000, "
                                          f"not {url!r}")  # fmt: skip
        return urls

    @field_validator("ray")
    @classmethod
    def _ray_address(cls, value: str | None) -> str | None:
        from pydantic_core import PydanticCustomError

        from stratagem.agents.ray_backend import ADDRESS_FORMS, check_address

        try:
            return None if value is None else check_address(value)
        except ValueError:
            raise PydanticCustomError("ray_address", f"expected {ADDRESS_FORMS}") from None

    @model_validator(mode="after")
    def _batches_hold_whole_groups(self) -> GRPOConfig:
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size * gradient_accumulation_steps = {batch} completions per step must be a "
                f"multiple of num_generations = {self.num_generations}; e.g. set per_device_train_batch_size to "
                f"{self.num_generations}"
            )
        self.loss_settings().warn_if_unusual()  # the loss's own checks (delta above 1 + epsilon_high, ...)
        self.rubric()  # reward function names known, weights finite
        return self

    @property
    def generation_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    def loss_settings(self) -> LossSettings:
        fields = [name for name in LossSettings.__dataclass_fields__ if name != "loss_type"]
        return LossSettings(loss_type=self.loss_type, **{name: getattr(self, name) for name in fields})

    def rubric(self) -> Rubric:
        return Rubric(weights=dict(self.reward_weights)) if self.reward_weights else Rubric()

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
                              max_new_tokens=self.max_completion_length)  # fmt: skip

    def check_model(self) -> None:
        """Fail now, in words, on a model directory that does not exist, instead of the hub's repo-id rules
        after the run has started. A name shaped like a hub id (``org/name``) is left to the loader."""
        if self.model in DEFAULT_MODELS:
            return
        path = Path(self.model).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError(f"--model {self.model}: that directory holds no config.json; give a directory "
                                  "written by save_pretrained (config.json, weights, tokenizer files)")  # fmt: skip
            return
        if path.exists():
            raise ConfigError(f"--model {self.model} is a file; give the directory that holds the model "
                              "(config.json, weights, tokenizer files)")  # fmt: skip
        looks_like_path = self.model.startswith((".", "/", "~")) or self.model.count("/") > 1 or "\\" in self.model
        if looks_like_path:
            raise ConfigError(f"--model {self.model}: no such directory. Give a local model directory (written "
                              "by save_pretrained), a hub id such as Qwen/Qwen3-0.6B, or 'default' (the embedded "
                              "model)")  # fmt: skip

    def model_path(self) -> str:
        """``model`` as a loadable path: "default" (and "default-gpt-oss") is the embedded model, built on first use."""
        if self.model not in DEFAULT_MODELS:
            return self.model
        from stratagem.rl.default_model import DefaultModelSettings, default_model_path, primed_for

        settings = DefaultModelSettings(architecture=DEFAULT_MODELS[self.model])
        return str(primed_for(default_model_path(settings), self.env, self.env_params, settings))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)


DEFAULT_MODELS = {"default": "llama", "default-gpt-oss": "gpt-oss"}  # embedded models by name: their architecture

# The embedded default run: what `stratagem train` does with no --config. The built-in model
# is tiny (a few million parameters), so it takes a far larger learning rate than TRL's 1e-6,
# and LoRA on every linear layer; a run of this length fits in a few minutes on 2 CPU cores.
DEFAULT_RUN: dict[str, Any] = {
    "max_steps": 40,
    "num_generations": 8,
    "per_device_train_batch_size": 16,
    "gradient_accumulation_steps": 4,  # 64 programs (8 groups) per step
    "learning_rate": 2e-3,
    "lr_scheduler_type": "constant_with_warmup",
    "warmup_steps": 2,
    "max_completion_length": 128,  # the built-in tokenizer's programs are ~30-60 tokens
    "max_prompt_length": None,  # every built-in task's prompt whole (Pong's is 551 tokens; the context is 1024)
    "lora_r": 16,
    "lora_alpha": 32,
    "num_episodes": 4,
    "save_steps": 10,
    "save_total_limit": 2,
}


# Short flags of `stratagem train`, and names other libraries use, for "did you mean".
FLAG_ALIASES = {"steps": "max_steps", "lr": "learning_rate", "out": "output_dir"}
OTHER_NAMES = {**FLAG_ALIASES, "batch_size": "per_device_train_batch_size", "kl_coef": "beta", "cliprange": "epsilon",
               "clip_range": "epsilon", "lora_rank": "lora_r", "max_new_tokens": "max_completion_length"}  # fmt: skip


def _describe(error: dict[str, Any]) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "config"
    if error["type"] == "extra_forbidden":
        close = [OTHER_NAMES[field]] if field in OTHER_NAMES else []
        close = close or difflib.get_close_matches(field, list(GRPOConfig.model_fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; see `stratagem train --help` for the fields"
        return f"unknown field {field!r}{hint}"
    return f"{field}: {error['msg']} (got {error.get('input')!r})"


def make_config(values: dict[str, Any]) -> GRPOConfig:
    """A GRPOConfig from plain values, or a ConfigError listing every problem at once."""
    try:
        return GRPOConfig(**values)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError("bad training config:\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> GRPOConfig:
    """The config in ``path`` (YAML; missing fields take the defaults) or, with no path, the embedded
    default run; then ``overrides`` (from command-line flags) on top.

    The environment's manifest may carry a ``training`` block (Pong's shortens its episodes, tic_tac_toe's
    plays more of them): it sits above the embedded run and below the file and the flags, ``env_params``
    merged key by key."""
    overrides = overrides or {}
    values: dict[str, Any] = read_yaml(path) if path is not None else {}
    env = overrides.get("env", values.get("env", GRPOConfig.model_fields["env"].default))
    training = manifest_training(str(env))
    below = {**(DEFAULT_RUN if path is None else {}), **training}
    merged = {**below, **values, **overrides}
    params = [layer.get("env_params") for layer in (below, values, overrides)]
    if any(isinstance(p, dict) for p in params):
        merged["env_params"] = {k: v for p in params if isinstance(p, dict) for k, v in p.items()}
    return make_config(merged)


def manifest_training(env: str) -> dict[str, Any]:
    """The ``training`` block of ``env``'s manifest, checked; {} where the environment does not resolve (the
    trainer then says why, in its own words)."""
    from stratagem.envs.spec import resolve

    try:
        spec = resolve(env)
    except Exception:
        return {}
    unknown = sorted(set(spec.training) - set(GRPOConfig.model_fields) | set(spec.training) & {"env", "output_dir"})
    if unknown:
        raise ConfigError(f"the {spec.name} manifest's training block: {unknown[0]!r} is not a training setting it may "
                          "give (any field of `stratagem train --help` but env and output_dir)")  # fmt: skip
    return dict(spec.training)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of field: value, got {type(values).__name__}")
    return values


def parse_flag_value(name: str, text: str) -> Any:
    """A command-line string for field ``name``, as the value pydantic then validates.

    Lists take commas (``--lora-target-modules q_proj,v_proj``), mappings take JSON
    (``--env-params '{"max_tile": 256}'``), optional fields take ``none``.
    """
    field = GRPOConfig.model_fields[name]
    annotation = str(field.annotation)
    if text.strip().lower() in ("none", "null") and "None" in annotation:
        return None
    if annotation.startswith("list["):
        return [item.strip() for item in text.split(",") if item.strip()]
    if "dict[" in annotation:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--{name.replace('_', '-')} takes a JSON object, e.g. '{{\"key\": 1}}': {exc}") from None
        return value
    return text
