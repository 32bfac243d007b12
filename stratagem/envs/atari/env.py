"""Atari 2600 games on ale-py, through gymnasium's ``ALE/<Game>-v5`` environments.

Any of gymnasium's ``ALE/<Game>-v5`` games (``game="Pong"``, ``"ALE/Pong-v5"`` or ``"pong"``), with
its knobs as parameters: ``frameskip``, ``repeat_action_probability`` (sticky actions),
``full_action_space``, ``mode``, ``difficulty``. Programs read the RAM and, for Pong, Breakout,
Freeway, Space Invaders and Ms. Pac-Man, named objects decoded from it (``atari_objects.py``);
actions are names (``"FIRE"``, ``"RIGHT"``), or OpenEnv's ``action_id`` (an index into
``legal_actions``).

Randomness. Gymnasium's ``reset(seed)`` re-seeds the ALE's sticky-action RNG by reloading the ROM
(0.2 s a reset); with sticky actions off its seeds all give the same game (checked for the five
games with object tables). So the ALE runs with ``repeat_action_probability=0`` and this module
applies the ALE's rule itself, frame by frame (with probability p a frame repeats the previous
frame's action; NOOP before the first), drawing from the episode's keyed stream (``envs/rng.py``,
which a program cannot rerun from the seed), and a reset
restores the emulator snapshot taken after the ALE's own ``reset_game`` (0.1 ms). Sticky actions
behave as gymnasium's, and ``reset(seed=s)`` plus the same actions replays exactly on this machine.

Frames are left out unless asked for (``frames="png"`` or ``"raw"``, as a parameter or per episode
as a reset field): a ``Frame`` of base64 PNG (1-2 kB) or raw RGB bytes with shape and dtype;
``decode_frame`` turns either back into an array. OpenEnv's ``AtariEnv`` reads the screen as a flat
list of ints (``screen``, ``screen_shape``): it comes only when asked for by ``obs_type`` (``rgb``,
``grayscale`` or ``ram``), in a step's action (that step), a reset field (the episode) or a parameter.
OpenEnv's ``game_name`` and ``full_action_space`` are checked against this environment's settings;
their OpenEnv defaults (``"pong"``, ``false``), which its client sends unasked, count as unset.
Episodes end at game over, after ``max_episode_steps`` agent steps (``metadata.truncated``), or at
the ALE's own frame cap.
"""

from __future__ import annotations

import difflib
import re
import uuid
from typing import Any

import ale_py
import gymnasium as gym

from stratagem.envs.atari.frames import encode_frame
from stratagem.envs.atari.gym_hooks import AtariGymHooks
from stratagem.envs.atari.models import (
    FRAME_MODES,
    MAX_FRAMESKIP,
    SCREEN_TYPES,
    STICKY,
    AtariAction,
    AtariObservation,
    AtariState,
)
from stratagem.envs.atari.objects import decode_objects
from stratagem.envs.core import Action, EnvError, Environment, EpisodeNotActive, InvalidAction
from stratagem.envs.rng import WARM_UP, Seed, episode_rng, new_seed, seed_number

gym.register_envs(ale_py)
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on stderr per emulator


def _key(text: str) -> str:
    """'ALE/SpaceInvaders-v5', 'space_invaders' and 'Space Invaders' all give 'spaceinvaders'."""
    return re.sub(r"[^a-z0-9]", "", re.sub(r"^ALE/|-v5$", "", text.strip()).lower())


GAMES: dict[str, str] = {  # normalised key -> gymnasium's name ("spaceinvaders" -> "SpaceInvaders")
    _key(env_id): env_id[4:-3] for env_id in gym.envs.registry if env_id.startswith("ALE/") and env_id.endswith("-v5")
}


def resolve_game(game: str) -> str:
    """Gymnasium's game name for any common spelling; ValueError naming close matches."""
    if not isinstance(game, str) or not game.strip():
        raise ValueError(f"game must be an Atari game name such as 'Pong', got {game!r}")
    name = GAMES.get(_key(game))
    if name is None:
        close = difflib.get_close_matches(_key(game), list(GAMES), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(repr(GAMES[c]) for c in close)}? " if close else ""
        raise ValueError(
            f"unknown Atari game {game!r}; {hint}any of gymnasium's {len(GAMES)} ALE/<Game>-v5 games works, "
            f"e.g. {', '.join(sorted(GAMES.values())[:6])}, ..."
        )
    return name


class AtariEnv(AtariGymHooks, Environment):
    action_type = AtariAction
    observation_type = AtariObservation
    state_type = AtariState

    def __init__(self, game: str = "Pong", frameskip: int = 4, repeat_action_probability: float = 0.25,
                 full_action_space: bool = False, mode: int | None = None, difficulty: int | None = None,
                 max_episode_steps: int | None = 27_000, frames: str = "none",
                 target_score: float | None = None, obs_type: str | None = None) -> None:  # fmt: skip
        self.game_name = resolve_game(game)
        if isinstance(frameskip, bool) or not isinstance(frameskip, int) or not 1 <= frameskip <= MAX_FRAMESKIP:
            raise ValueError(f"frameskip must be an integer in 1..{MAX_FRAMESKIP} (frames per step), got {frameskip!r}")
        p = repeat_action_probability
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"repeat_action_probability must be a number in [0, 1), e.g. 0.25 (ALE v5), got {p!r}")
        if not isinstance(full_action_space, bool):
            raise ValueError(f"full_action_space must be true or false, got {full_action_space!r}")
        if max_episode_steps is not None and (
            isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 1
        ):
            raise ValueError(f"max_episode_steps must be a positive integer or null, got {max_episode_steps!r}")
        if target_score is not None and (isinstance(target_score, bool) or not isinstance(target_score, (int, float))):
            raise ValueError(f"target_score must be a number or null, got {target_score!r}")
        self.frames = _frame_mode(frames, ValueError)
        self.obs_type = _screen_type(obs_type, ValueError)
        self.frameskip, self.repeat_action_probability = frameskip, float(p)
        self.full_action_space, self.mode, self.difficulty = full_action_space, mode, difficulty
        self.max_episode_steps, self.target_score = max_episode_steps, target_score
        # The ALE's own sticky actions are off: this module applies them from the episode's seed.
        self._gym = gym.make(f"ALE/{self.game_name}-v5", obs_type="ram", frameskip=1,
                             repeat_action_probability=0.0, full_action_space=full_action_space)  # fmt: skip
        self.rom = self._gym.unwrapped._game
        self.ale = self._gym.unwrapped.ale
        self._set_variant()
        self._action_set = list(self._gym.unwrapped._action_set)
        self.action_names = [a.name for a in self._action_set]
        self._index = {name: i for i, name in enumerate(self.action_names)}
        self.ale.reset_game()
        self._start = self.ale.cloneState()
        # restoreState brings back the emulator, not the screen it last drew: a reset shows these copies
        self._start_screens = {"rgb": self.ale.getScreenRGB().copy(), "grayscale": self.ale.getScreenGrayscale().copy()}
        self._rng = episode_rng(WARM_UP, STICKY)
        self._state = self._new_state(None, None)
        self._active = False
        self._episode_frames, self._episode_screen = self.frames, self.obs_type
        self._last = ale_py.Action.NOOP
        self._truncated = False

    def _set_variant(self) -> None:
        """Mode and difficulty, checked against the ROM's own lists before the ALE is told."""
        for what, value, available, setter in (
            ("mode", self.mode, self.ale.getAvailableModes(), self.ale.setMode),
            ("difficulty", self.difficulty, self.ale.getAvailableDifficulties(), self.ale.setDifficulty),
        ):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value not in list(available):
                self._gym.close()
                raise ValueError(f"{what} {value!r} does not exist for {self.game_name}; it has {list(available)}")
            setter(value)

    def _new_state(self, seed: int | None, episode_id: str | None) -> AtariState:
        return AtariState(
            episode_id=episode_id,
            seed=seed,
            game_name=self.game_name,
            frameskip=self.frameskip,
            repeat_action_probability=self.repeat_action_probability,
            full_action_space=self.full_action_space,
            mode=self.mode,
            difficulty=self.difficulty,
        )

    # --- the episode -------------------------------------------------------------------
    def reset(self, seed: Seed | None = None, episode_id: str | None = None, frames: str | None = None,
              obs_type: str | None = None) -> AtariObservation:  # fmt: skip
        """``frames``: 'none', 'png' or 'raw' for this episode; ``obs_type``: 'rgb', 'grayscale' or 'ram' as
        ``screen`` in every observation of it (defaults: the parameters of the same names)."""
        self._episode_frames = self.frames if frames is None else _frame_mode(frames, EnvError)
        self._episode_screen = self.obs_type if obs_type is None else _screen_type(obs_type, EnvError)
        seed = new_seed() if seed is None else seed
        self._rng = episode_rng(seed, STICKY)
        self.ale.restoreState(self._start)
        self._last = ale_py.Action.NOOP
        self._truncated, self._active = False, True
        self._state = self._new_state(seed_number(seed), episode_id or str(uuid.uuid4()))
        self._state.lives = self.ale.lives()
        return self._observe(reward=None)

    def step(self, action: Action | dict[str, Any], timeout_s: float | None = None) -> AtariObservation:
        index, screen = self._checked(action)
        return self._observe(reward=self._advance(index), screen=screen)

    def _advance(self, index: int) -> float:
        """Play one checked action for ``frameskip`` frames, sticky as the ALE's v5 rule; the reward."""
        if not self._active:
            raise EpisodeNotActive("no episode has started: call reset first")
        if self._state.done:
            raise EpisodeNotActive("the episode is over: call reset to start a new one")
        ale, chosen, p, reward = self.ale, self._action_set[index], self.repeat_action_probability, 0.0
        for _ in range(self.frameskip):
            if p == 0.0 or self._rng.random() >= p:
                self._last = chosen
            reward += ale.act(self._last)
            if ale.game_over():
                break
        st = self._state
        st.step_count += 1
        st.score += reward
        st.lives = ale.lives()
        over = ale.game_over(with_truncation=False)
        self._truncated = not over and (
            ale.game_truncated() or (self.max_episode_steps is not None and st.step_count >= self.max_episode_steps)
        )
        st.done = over or self._truncated
        return float(reward)

    def _checked(self, action: Action | dict[str, Any]) -> tuple[int, str | None]:
        """The action's index and the screen it asks for; the replay's ``{"action": name}`` dicts skip pydantic."""
        if type(action) is dict and len(action) == 1 and type(action.get("action")) is str:
            index = self._index.get(action["action"])
            if index is not None:
                return index, None
        action = self.parse_action(action)
        if action.game_name not in (None, OPENENV_DEFAULT_GAME) and \
                _key(action.game_name) not in (_key(self.game_name), _key(self.rom)):  # fmt: skip
            raise InvalidAction(f"this environment plays {self.game_name}, not {action.game_name!r}; "
                                f"send game_name={self.game_name!r} or omit it")  # fmt: skip
        if action.full_action_space and not self.full_action_space:
            raise InvalidAction(f"this environment uses {self.game_name}'s minimal action set ({self._legal_text()}), "
                                "not the full one: send full_action_space=false or omit it, or serve it with "
                                "full_action_space=true")  # fmt: skip
        if action.action_id is not None:
            if action.action_id >= len(self._action_set):
                last = len(self._action_set) - 1
                raise InvalidAction(f"action_id {action.action_id} is out of range for {self.game_name}: legal "
                                    f"action ids are 0..{last} ({self._legal_text()})")  # fmt: skip
            return action.action_id, action.obs_type
        index = self._index.get(action.action.upper())
        if index is None:
            raise InvalidAction(f"{action.action!r} is not an action of {self.game_name}; legal actions: "
                                f"{self._legal_text()}")  # fmt: skip
        return index, action.obs_type

    def _legal_text(self) -> str:
        return ", ".join(f"{i}={name}" for i, name in enumerate(self.action_names))

    @property
    def state(self) -> AtariState:
        return self._state

    def close(self) -> None:
        self._gym.close()

    # --- what is seen ------------------------------------------------------------------
    def _won(self, ram: list[int]) -> bool:
        if self.target_score is not None:
            return self._state.score >= self.target_score
        if self.rom == "pong":  # first to 21; the ALE ends the game there
            return self.ale.game_over(with_truncation=False) and ram[14] > ram[13]
        return False

    def _observe(self, reward: float | None, screen: str | None = None) -> AtariObservation:
        """``screen``: the screen this step asked for (``obs_type``), else the episode's."""
        ale = self.ale
        ram = ale.getRAM().tolist()
        st = self._state
        frame = None if self._episode_frames == "none" else encode_frame(self._screen("rgb"), self._episode_frames)
        pixels = self._screen(screen or self._episode_screen) if (screen or self._episode_screen) else None
        return AtariObservation(
            screen=[] if pixels is None else pixels.ravel().tolist(),
            screen_shape=[] if pixels is None else list(pixels.shape),
            legal_actions=list(range(len(self.action_names))),
            lives=st.lives,
            episode_frame_number=ale.getEpisodeFrameNumber(),
            frame_number=ale.getFrameNumber(),
            game_name=self.game_name,
            ram=ram,
            objects=decode_objects(self.rom, ram),
            score=st.score,
            step=st.step_count,
            action_names=list(self.action_names),
            won=self._won(ram),
            frame=frame,
            done=st.done,
            reward=reward,
            metadata={"truncated": True} if self._truncated else {},
        )

    def _screen(self, kind: str) -> Any:
        """The screen as ``kind`` (rgb, grayscale or ram) now; at a reset, the one the episode starts from."""
        if self._state.step_count == 0 and kind in self._start_screens:
            return self._start_screens[kind]
        return _SCREENS[kind](self.ale)

    # --- how programs play (bridge.py) -------------------------------------------------
    def _program_view(self) -> dict[str, Any]:
        ram = self.ale.getRAM().tolist()
        st = self._state
        return {"objects": decode_objects(self.rom, ram), "ram": ram, "lives": st.lives, "score": st.score,
                "step": st.step_count, "actions": list(self.action_names)}  # fmt: skip

    def program_inputs(self, observation: AtariObservation) -> tuple[dict[str, Any]]:
        return ({"objects": dict(observation.objects), "ram": list(observation.ram), "lives": observation.lives,
                 "score": observation.score, "step": observation.step,
                 "actions": list(observation.action_names)},)  # fmt: skip

    def program_action(self, value: Any) -> AtariAction:
        return AtariAction(action=self.action_names[self._program_index(value)])

    def _program_index(self, value: Any) -> int:
        """An action name, exactly a str (any case): a str subclass is not trusted."""
        if type(value) is str:
            index = self._index.get(value.upper())
            if index is not None:
                return index
        shown = repr(value)[:40] if type(value) in (str, int, float, bool, type(None)) else type(value).__name__
        raise ValueError(f"the strategy returned {shown}; expected one of {', '.join(map(repr, self.action_names))}")

    def play(self, seed: Seed, policy: Any, actions: list[dict[str, Any]]) -> AtariObservation:
        """``step``'s rules, with the program's view built straight from RAM and one observation at the end."""
        self.reset(seed=seed, episode_id=f"seed-{seed}")
        reward = None
        while not self._state.done:
            index = self._program_index(policy(self._program_view()))
            reward = self._advance(index)
            actions.append({"action": self.action_names[index]})
        return self._observe(reward=reward)

    def replay(self, seed: Seed, actions: list[Any], on_step: Any = None) -> tuple[AtariObservation, float]:
        """The same moves as ``step``, but only the last position becomes an observation."""
        if on_step is not None:
            return super().replay(seed, actions, on_step)
        obs = self.reset(seed=seed, episode_id=f"seed-{seed}", frames="none")
        reward = None
        for raw in actions:
            reward = self._advance(self._checked(raw)[0])
        if actions:
            obs = self._observe(reward=reward)
        return obs, self._state.score


def _frame_mode(value: Any, error: type[Exception]) -> str:
    if value not in FRAME_MODES:
        raise error(f"frames must be one of {', '.join(map(repr, FRAME_MODES))}, got {value!r}")
    return value


def _screen_type(value: Any, error: type[Exception]) -> str | None:
    if value is not None and value not in SCREEN_TYPES:
        raise error(f"obs_type must be one of {', '.join(map(repr, SCREEN_TYPES))} or null, got {value!r}")
    return value


OPENENV_DEFAULT_GAME = "pong"  # OpenEnv's AtariAction.game_name default: its typed client sends it unasked
_SCREENS = {  # OpenEnv's obs_type -> the ALE's array
    "rgb": lambda ale: ale.getScreenRGB(),
    "grayscale": lambda ale: ale.getScreenGrayscale(),
    "ram": lambda ale: ale.getRAM(),
}
