"""What crosses the wire for Atari: the action, the observation with its optional frame, the state."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stratagem.envs.core import Action, Observation, State

FRAME_MODES = ("none", "png", "raw")
STICKY = "atari/sticky"
MAX_FRAMESKIP = 64


class AtariAction(Action):
    action: str | None = Field(default=None, description="an action name from action_names, e.g. 'FIRE'")
    action_id: int | None = Field(default=None, ge=0, description="an index into legal_actions (OpenEnv's field)")
    game_name: str | None = Field(default=None, description="optional; must name this environment's game")

    @model_validator(mode="after")
    def _one_action(self) -> AtariAction:
        if (self.action is None) == (self.action_id is None):
            raise ValueError("send exactly one of 'action' (a name such as 'FIRE') or 'action_id' (an index)")
        return self


class Frame(BaseModel):
    """One screen, compact: ``data`` is base64 of a PNG file or of the raw bytes in ``shape``/``dtype``."""

    model_config = ConfigDict(extra="forbid")
    encoding: Literal["png", "raw"]
    shape: list[int] = Field(description="[height, width, 3]")
    dtype: Literal["uint8"] = "uint8"
    data: str


class AtariObservation(Observation):
    game_name: str = Field(description="gymnasium's name, e.g. 'Pong' for ALE/Pong-v5")
    ram: list[int] = Field(description="the console's 128 bytes of RAM")
    objects: dict[str, int | None] = Field(description="named positions (screen pixels), score, lives; see manifest")
    score: float = Field(description="the episode's total reward so far (Pong: your points minus theirs)")
    lives: int
    step: int = Field(description="agent steps taken this episode")
    legal_actions: list[int] = Field(description="valid action_id values (OpenEnv's field)")
    action_names: list[str] = Field(description="the name of each action_id")
    episode_frame_number: int
    won: bool = Field(description="score >= target_score when that is set; else Pong: reached 21 first")
    frame: Frame | None = Field(default=None, description="the screen, when the episode asked for frames")


class AtariState(State):
    game_name: str = ""
    seed: int | None = None
    score: float = 0.0
    lives: int = 0
    done: bool = False
    frameskip: int = 4
    repeat_action_probability: float = 0.25
    full_action_space: bool = False
    mode: int | None = None
    difficulty: int | None = None
