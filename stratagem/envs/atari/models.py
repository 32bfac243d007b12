"""What crosses the wire for Atari: the action, the observation with its optional screen or frame, the state.

OpenEnv's ``AtariAction``/``AtariObservation`` fields come first, so OpenEnv's ``AtariEnv`` client reads
them unchanged; stratagem's follow.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stratagem.envs.core import Action, Observation, State

FRAME_MODES = ("none", "png", "raw")
SCREEN_TYPES = ("rgb", "grayscale", "ram")  # OpenEnv's obs_type: a screen as a flat list of ints
ScreenType = Literal["rgb", "grayscale", "ram"]
STICKY = "atari/sticky"
MAX_FRAMESKIP = 64


class AtariAction(Action):
    action: str | None = Field(default=None, description="an action name from action_names, e.g. 'FIRE'")
    action_id: int | None = Field(default=None, ge=0, description="an index into legal_actions (OpenEnv's field)")
    game_name: str | None = Field(
        default=None,
        description="optional (OpenEnv's field): this environment's game; 'pong', OpenEnv's default, counts as unset",
    )
    obs_type: ScreenType | None = Field(
        default=None,
        description="optional (OpenEnv's field): put this screen in this step's observation as screen and "
        "screen_shape (rgb: 100,800 ints; grayscale: 33,600; ram: 128)",
    )
    full_action_space: bool | None = Field(
        default=None,
        description="optional (OpenEnv's field): must match the server's; false, OpenEnv's default, counts as unset",
    )

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
    # OpenEnv's AtariObservation, field for field
    screen: list[int] = Field(
        default_factory=list,
        description="the screen as a flat list of ints, only when asked for (obs_type: an action field, a reset "
        "field or a parameter); [] otherwise",
    )
    screen_shape: list[int] = Field(
        default_factory=list, description="screen's shape: [210, 160, 3] (rgb), [210, 160] (grayscale), [128] (ram)"
    )
    legal_actions: list[int] = Field(description="valid action_id values")
    lives: int
    episode_frame_number: int
    frame_number: int = Field(description="emulator frames since the ROM's start (replays exactly, as the episode)")
    # stratagem's
    game_name: str = Field(description="gymnasium's name, e.g. 'Pong' for ALE/Pong-v5")
    ram: list[int] = Field(description="the console's 128 bytes of RAM")
    objects: dict[str, int | None] = Field(description="named positions (screen pixels), score, lives; see manifest")
    score: float = Field(description="the episode's total reward so far (Pong: your points minus theirs)")
    step: int = Field(description="agent steps taken this episode")
    action_names: list[str] = Field(description="the name of each action_id")
    won: bool = Field(description="score >= target_score when that is set; else Pong: reached 21 first")
    frame: Frame | None = Field(default=None, description="the screen as PNG or raw bytes, when frames asks for it")


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
