"""OpenEnv 0.10's ``validation:`` block, mirrored: one manifest serves ``stratagem serve`` and ``openenv validate``.

``openenv validate PACKAGE`` grades an environment against this block (the reward range, resources,
capabilities, tags, and the runtime ``execution`` binding). openenv is not a dependency, so its structural
rules (``openenv.validation.manifest``) are copied here and checked when a manifest is loaded: a mistake in
the block is reported by ``stratagem`` with the rest of the manifest's, not first by another tool. It lives
apart from ``spec.py`` because it follows OpenEnv's schema, not stratagem's: when OpenEnv changes the block,
this file is the one to change.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ValidationReward(BaseModel):
    """The reward every step may give: OpenEnv's runtime grader fails a step reward outside ``range``."""

    model_config = ConfigDict(extra="forbid")
    range: tuple[float, float] = Field(default=(0.0, 1.0), description="[lowest, highest] step reward")
    oracle_tolerance: float = Field(default=0.0, ge=0)
    floor_margin: float = Field(ge=0, description="required; OpenEnv's policy asks for at least 0.1")
    variance_tolerance: float | None = Field(default=None, ge=0, description="required iff llm_judged")

    @model_validator(mode="after")
    def _increasing(self) -> ValidationReward:
        low, high = self.range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"range must be [low, high] with low < high, both finite, got {list(self.range)}")
        return self


class ValidationResources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu: float = Field(gt=0)
    memory_mb: int = Field(gt=0)
    disk_mb: int = Field(gt=0)
    episode_timeout_s: float = Field(gt=0, description="OpenEnv's policy allows at most 3600")
    gpus: int = Field(default=0, ge=0)
    gpu_types: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _gpu_types_need_gpus(self) -> ValidationResources:
        if self.gpu_types and self.gpus == 0:
            raise ValueError("gpu_types is declared but gpus is 0")
        return self


class ValidationVerifier(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["reward_channel", "script"]
    entry: str | None = None

    @model_validator(mode="after")
    def _entry_iff_script(self) -> ValidationVerifier:
        if (self.kind == "script") != (self.entry is not None):
            raise ValueError("verifier.entry is required when kind is 'script' and only then")
        return self


class ValidationOracle(BaseModel):
    model_config = ConfigDict(extra="forbid")
    form: Literal["injected_state", "script"]
    location: str


class ValidationCapabilities(BaseModel):
    model_config = ConfigDict(extra="forbid")
    oracle: ValidationOracle | None = None
    verifier: ValidationVerifier
    set_state: bool = False
    llm_judged: bool = False
    rubric_tree: bool = False
    task_api: bool = False
    canaries: str | None = None
    declared_tools: list[str] = Field(default_factory=list)
    declared_task_count: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _injected_state_needs_set_state(self) -> ValidationCapabilities:
        if self.oracle is not None and self.oracle.form == "injected_state" and not self.set_state:
            raise ValueError("oracle.form 'injected_state' needs set_state: true")
        return self


class ValidationTypes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


class ValidationNetwork(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["public", "no-network", "allowlist"] = "public"
    allowed_hosts: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _hosts_iff_allowlist(self) -> ValidationNetwork:
        if (self.mode == "allowlist") != bool(self.allowed_hosts):
            raise ValueError("allowed_hosts is needed with mode 'allowlist' and only then")
        return self


class ValidationJudge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    version: str
    params: dict[str, Any] = Field(default_factory=dict)


class ValidationTaskDistribution(BaseModel):
    model_config = ConfigDict(extra="forbid")
    generator_seed: int | None = None
    dataset_version: str | None = None
    generator_model: str | None = None


class ValidationExecution(BaseModel):
    """How ``openenv validate --level runtime`` builds and reaches the environment."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["openenv_ws"] = "openenv_ws"
    probe_path: str = Field(default="validation/runtime.json", description="the runtime plan: a reset and actions")
    dockerfile: str = "Dockerfile"
    context: str = "."
    agent_boundary: Literal["api"] = "api"
    requires_credentials: bool = Field(default=False, strict=True)

    @field_validator("probe_path", "dockerfile", "context")
    @classmethod
    def _inside_the_package(cls, value: str) -> str:
        path = PurePosixPath(value)
        if not value or "\\" in value or ":" in value or "\x00" in value or path.is_absolute() or ".." in path.parts:
            raise ValueError("must be a relative path inside the manifest's directory, without '..'")
        return value

    @field_validator("probe_path", "dockerfile")
    @classmethod
    def _a_file(cls, value: str) -> str:
        if PurePosixPath(value) == PurePosixPath("."):
            raise ValueError("must name a file")
        return value


class ValidationSpec(BaseModel):
    """OpenEnv 0.10's ``validation:`` block: what ``openenv validate PACKAGE`` grades the environment against."""

    model_config = ConfigDict(extra="forbid")
    reward: ValidationReward
    resources: ValidationResources
    capabilities: ValidationCapabilities
    types: ValidationTypes
    network: ValidationNetwork = Field(default_factory=ValidationNetwork)
    judge: ValidationJudge | None = None
    task_distribution: ValidationTaskDistribution | None = None
    execution: ValidationExecution | None = Field(default=None, description="needed for the runtime level")

    @model_validator(mode="after")
    def _judge_iff_llm_judged(self) -> ValidationSpec:
        if self.capabilities.llm_judged and (self.judge is None or self.reward.variance_tolerance is None):
            raise ValueError("capabilities.llm_judged needs a judge block and reward.variance_tolerance")
        if not self.capabilities.llm_judged and self.judge is not None:
            raise ValueError("a judge block needs capabilities.llm_judged: true")
        return self
