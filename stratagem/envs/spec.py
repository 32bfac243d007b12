"""EnvSpec: the manifest that defines an environment, and the registry of known ones.

A manifest is a superset of OpenEnv's ``openenv.yaml``: OpenEnv's keys keep their meaning and
stratagem adds the ones it needs to build and describe the environment (``entry_point``,
``params``, ``strategy``, ...). Built-in environments are registered by the same kind of YAML
file (``stratagem/envs/manifests/<name>/openenv.yaml``), so a user's environment is a first-class
citizen: ``stratagem serve path/to/openenv.yaml`` works exactly like ``stratagem serve 2048``.

OpenEnv 0.10's ``validation:`` block (what ``openenv validate PACKAGE`` reads: the reward range,
resources, capabilities, tags, and the runtime ``execution`` binding) is checked when the manifest is
loaded, with OpenEnv's structural rules (mirrored in ``openenv_validation.py``), so one file serves both
``stratagem serve`` and ``openenv validate``. Each built-in manifest sits in a directory of its own with
its ``Dockerfile`` and ``validation/runtime.json``: an OpenEnv package, one ``openenv.yaml`` to a directory.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from stratagem.envs.core import Environment
from stratagem.envs.openenv_validation import ValidationSpec

MANIFEST_DIR = Path(__file__).parent / "manifests"


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the field and the fix."""


# Standard-library modules a strategy program may ever import. Each is handed to programs as
# a proxy holding only its public, non-module attributes (``typing.sys`` and the like stay out).
SAFE_IMPORTS = frozenset(
    {"math", "random", "itertools", "functools", "collections", "heapq", "bisect", "typing", "copy", "statistics"}
)


class StrategySpec(BaseModel):
    """The function an LLM must write to play this environment."""

    model_config = ConfigDict(extra="forbid")
    function: str = "strategy"
    args: list[str] = Field(default_factory=lambda: ["observation"])
    goal: str = Field(
        default="plays this game as well as possible. It is called once per move with the current state and "
        "must answer quickly.",
        description="what the function must do, completing 'Write a short Python function ... that'",
    )
    inputs: str = Field(default="", description="what the arguments hold, for the task prompt")
    returns: str = "an action"
    imports: list[str] = Field(
        default_factory=lambda: sorted(SAFE_IMPORTS), description=f"allowed imports, a subset of {sorted(SAFE_IMPORTS)}"
    )

    @field_validator("imports")
    @classmethod
    def _safe_imports(cls, value: list[str]) -> list[str]:
        unsafe = sorted(set(value) - SAFE_IMPORTS)
        if unsafe:
            raise ValueError(f"{unsafe} cannot be offered to programs; choose from {sorted(SAFE_IMPORTS)}")
        return value

    @field_validator("function", "args")
    @classmethod
    def _identifiers(cls, value: Any) -> Any:
        for name in [value] if isinstance(value, str) else value:
            if not name.isidentifier():
                raise ValueError(f"{name!r} is not a Python identifier")
        return value


class RewardSpec(BaseModel):
    """How an episode's outcome becomes reward (``agents/rewards.py`` reads it)."""

    model_config = ConfigDict(extra="forbid")
    win: float = Field(default=1.0, description="strategy_succeeds for a won episode")
    loss: float = Field(default=0.0, description="strategy_succeeds for an episode played to its end and lost")
    score_scale: float = Field(default=1.0, gt=0, description="the score at which the score-shaped reward reaches 1")

    @model_validator(mode="after")
    def _win_above_loss(self) -> RewardSpec:
        if self.win <= self.loss:
            raise ValueError(f"win ({self.win}) must be greater than loss ({self.loss})")
        return self


class EnvSpec(BaseModel):
    """One environment's manifest, validated."""

    model_config = ConfigDict(extra="forbid")

    # OpenEnv's openenv.yaml keys
    spec_version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    type: str = "space"
    runtime: Literal["fastapi"] = "fastapi"
    app: str = "stratagem.server.app:app"
    port: int = Field(default=8000, ge=1, le=65535)
    variables: dict[str, str] = Field(default_factory=dict)
    # stratagem's keys
    entry_point: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    description: str = ""
    version: str = "0.1.0"
    author: str | None = None
    documentation_url: str | None = None
    readme: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    max_episode_steps: int | None = Field(default=None, ge=1)
    reward: RewardSpec = Field(default_factory=RewardSpec)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    training: dict[str, Any] = Field(
        default_factory=dict,
        description="defaults for `stratagem train` on this environment (training config fields, env_params among "
        "them), under a --config file's values and the flags",
    )
    # OpenEnv 0.10's
    validation: ValidationSpec | None = Field(default=None, description="what openenv validate reads")

    source: Path | None = Field(default=None, exclude=True, description="the file this spec came from")

    def env_class(self) -> type[Environment]:
        """Import the class named by ``entry_point`` (the manifest's directory is importable)."""
        module_name, _, class_name = self.entry_point.partition(":")
        if self.source is not None and str(self.source.parent) not in sys.path:
            sys.path.insert(0, str(self.source.parent))
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ManifestError(f"{self._where()}: {self._import_failure(module_name, exc)}") from exc
        except Exception as exc:  # the module is there but broken: a SyntaxError, a NameError at import time
            raise ManifestError(
                f"{self._where()}: importing entry_point module {module_name!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        cls = getattr(module, class_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Environment)):
            raise ManifestError(f"{self._where()}: entry_point {self.entry_point!r} {_not_an_env(module, class_name)}")
        return cls

    def _import_failure(self, module_name: str, exc: ImportError) -> str:
        """Which module is missing: the entry point's own (a path or spelling mistake) or one it imports."""
        if exc.name and exc.name != module_name and not module_name.startswith(exc.name + "."):
            return f"entry_point module {module_name!r} was found but importing it failed: {exc}"
        where = self.source.parent if self.source else Path.cwd()
        nearby = sorted(p.stem for p in where.glob("*.py"))
        close = difflib.get_close_matches(module_name, nearby, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; modules there: {', '.join(nearby)}" if nearby else "")
        return (
            f"entry_point module {module_name!r} cannot be imported: {exc}. It must be importable from the "
            f"manifest's directory ({where}), e.g. a file {module_name.replace('.', '/')}.py there, or an installed "
            f"package{hint}"
        )

    def make(self, **overrides: Any) -> Environment:
        """Build one environment instance with the manifest's params, overridden by ``overrides``."""
        return self.env_class()(**self.constructor_kwargs(**overrides))

    def constructor_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The constructor arguments, checked against the class's signature before any work."""
        cls = self.env_class()
        params = {**self.params, **overrides}
        accepted = {
            name
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        if self.max_episode_steps is not None and "max_episode_steps" in accepted:
            params.setdefault("max_episode_steps", self.max_episode_steps)
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise ManifestError(
                f"{self._where()}: unknown parameter(s) {unknown} for {cls.__name__}; "
                f"it accepts: {sorted(accepted) or 'none'}"
            )
        wrong = _mistyped(cls, params)
        if wrong:
            raise ManifestError(f"{self._where()}: " + "; ".join(wrong))
        return params

    def _where(self) -> str:
        return str(self.source) if self.source else f"environment {self.name!r}"


def load_spec(path: str | Path) -> EnvSpec:
    """Read and validate a manifest file; every problem becomes one clear ManifestError."""
    path = Path(path)
    if path.is_dir():
        path = path / "openenv.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest file") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a manifest must be a YAML mapping of keys to values")
    try:
        spec = EnvSpec.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(f"{path}: " + "; ".join(_explain(err) for err in exc.errors())) from None
    spec.source = path.resolve()
    return spec


# What a correct value looks like, for the fields whose mistakes are common.
_EXAMPLES = {
    "entry_point": "entry_point: my_module:MyEnv (my_module.py beside the manifest, MyEnv an Environment subclass)",
    "name": "name: my-game (letters, digits, '_', '.', '-'; at most 64)",
    "params": "params: {size: 5} (the class's constructor arguments by name)",
    "strategy": "strategy: {function: strategy, args: [board], returns: ...}, or leave it out for the defaults",
    "strategy.args": "args: [board] (a list of argument names)",
    "strategy.imports": "imports: [math, random]",
    "reward": "reward: {win: 1.0, loss: 0.0, score_scale: 100}",
    "validation": "validation: {reward: {range: [0.0, 1.0], floor_margin: 0.1}, resources: {cpu: 1, memory_mb: 1024, "
    "disk_mb: 512, episode_timeout_s: 60}, capabilities: {verifier: {kind: reward_channel}}, types: {tags: [game]}}",
    "validation.reward.range": "range: [-1.0, 1.0] (the lowest and highest step reward)",
}


def _explain(err: dict[str, Any]) -> str:
    field = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        keys = [k for k in _block_at(err["loc"][:-1]).model_fields if k != "source"]
        close = difflib.get_close_matches(str(err["loc"][-1]), keys, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(keys)}"
        return f"unknown key {field!r}{hint}"
    if err["type"] == "missing":
        return f"missing required key {field!r}" + (
            " (e.g. entry_point: my_package.my_module:MyEnv)" if field == "entry_point" else ""
        )
    message = err["msg"].removeprefix("Value error, ")
    if field == "entry_point" and err["type"] == "string_pattern_mismatch" and isinstance(err.get("input"), str):
        module, dot, cls = err["input"].rpartition(".")
        hint = f"; did you mean {module + ':' + cls!r}?" if dot and ":" not in err["input"] else ""
        return f"entry_point must be 'module:Class', got {err['input']!r}{hint} (e.g. {_EXAMPLES['entry_point']})"
    checked = err["type"] in ("value_error", "assertion_error")
    example = None if checked else _EXAMPLES.get(field)
    got = "" if checked and isinstance(err.get("input"), dict) else f" (got {err.get('input')!r})"  # a whole block
    return f"{field}: {message}{got}" + (f"; write e.g. {example}" if example else "")


def _block_at(loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model that holds the keys at ``loc`` (``("validation", "reward")`` -> ``ValidationReward``)."""
    block: type[BaseModel] = EnvSpec
    for part in loc:
        field = block.model_fields.get(str(part))
        inner = [a for a in typing.get_args(field.annotation) or (field.annotation,) if isinstance(a, type)] \
            if field else []  # fmt: skip
        models = [a for a in inner if issubclass(a, BaseModel)]
        if not models:
            break
        block = models[0]
    return block


def _not_an_env(module: Any, name: str) -> str:
    """Why ``module.name`` is not an environment class, and what the module offers instead."""
    found = getattr(module, name, None)
    envs = sorted(k for k, v in vars(module).items() if inspect.isclass(v) and issubclass(v, Environment)
                  and v.__module__ == module.__name__)  # fmt: skip
    offer = f"; Environment subclasses in {module.__name__}: {', '.join(envs)}" if envs else ""
    close = difflib.get_close_matches(name, envs, n=1)
    head = "must name a subclass of stratagem.envs.core.Environment, but "
    if found is None:
        hint = f"; did you mean {module.__name__}:{close[0]}?" if close else offer
        return head + f"module {module.__name__!r} has no {name!r}{hint}"
    if not inspect.isclass(found):
        return head + f"{name} is a {type(found).__name__}{offer}"
    return (head + f"{name} is a class based on {found.__bases__[0].__name__} (write `class {name}(Environment)`, "
            f"with `from stratagem.envs.core import Environment`){offer}")  # fmt: skip


def _mistyped(cls: type, params: dict[str, Any]) -> list[str]:
    """Parameters whose value cannot be what the constructor's annotation says (checked, never converted)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # annotations naming what cannot be resolved here: nothing to check against
        return []
    wrong = []
    for name, value in params.items():
        if name not in hints:
            continue
        try:
            TypeAdapter(hints[name]).validate_python(value)
        except ValidationError as exc:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            wrong.append(f"parameter {name!r} of {cls.__name__} must be {_type_name(hints[name])}, got {shown} "
                         f"({type(value).__name__}): {exc.errors()[0]['msg']}")  # fmt: skip
        except Exception:  # a type pydantic cannot check: the constructor will
            continue
    return wrong


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def manifest_paths() -> list[Path]:
    """The built-in manifests: ``manifests/<name>/openenv.yaml``, one OpenEnv package a directory."""
    return sorted(MANIFEST_DIR.glob("*/openenv.yaml"))


def registry() -> dict[str, EnvSpec]:
    """The built-in environments, by name."""
    specs = (load_spec(p) for p in manifest_paths())
    return {spec.name: spec for spec in specs}


def resolve(name_or_path: str | Path) -> EnvSpec:
    """A registered name, a manifest file, or a directory holding ``openenv.yaml``."""
    text = str(name_or_path)
    known = registry()
    if text in known:
        return known[text]
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_dir() or path.exists():
        return load_spec(path)
    close = difflib.get_close_matches(text, list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ManifestError(
        f"unknown environment {text!r}.{hint} Registered: {', '.join(sorted(known))}; "
        "or pass the path of an openenv.yaml manifest."
    )


def make(name_or_path: str | Path, **params: Any) -> Environment:
    """Build an environment in-process, exactly as a server would for one session."""
    return resolve(name_or_path).make(**params)
