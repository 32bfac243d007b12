"""The gym: environments, their manifests, and the OpenEnv wire protocol (server and client)."""

from stratagem.envs.core import (
    Action,
    EnvError,
    Environment,
    EpisodeNotActive,
    InvalidAction,
    Observation,
    State,
    StepResult,
)
from stratagem.envs.spec import EnvSpec, ManifestError, load_spec, make, registry, resolve

__all__ = [
    "Action",
    "EnvError",
    "EnvSpec",
    "Environment",
    "EpisodeNotActive",
    "InvalidAction",
    "ManifestError",
    "Observation",
    "State",
    "StepResult",
    "load_spec",
    "make",
    "registry",
    "resolve",
]
