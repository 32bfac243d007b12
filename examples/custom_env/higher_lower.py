"""Higher or lower: find a secret number; each wrong guess is answered "higher" or "lower".

A complete stratagem environment written outside stratagem: this class and ``openenv.yaml``
beside it are all there is, and ``stratagem serve``, ``play``, ``train`` and ``GymEnv`` take the
manifest's path. There is something to learn: guessing at random or counting up rarely finds a
secret in 1..100 within 7 guesses, a bisection always does, and one with an off-by-one in its
bounds loses now and then. The score is the guesses left over, the winning one included, so a
quicker find scores more.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import Field

from stratagem.envs.core import Action, Environment, EpisodeNotActive, InvalidAction, Observation, State
from stratagem.envs.rng import episode_rng, new_seed, seed_number

Hint = Literal["higher", "lower"]


class GuessAction(Action):
    guess: int = Field(description="a number from 1 to high")


class GuessObservation(Observation):
    high: int = Field(description="the secret is an integer from 1 to high")
    guesses_left: int
    history: list[tuple[int, Hint]] = Field(description="each wrong guess and which way the secret lies from it")
    won: bool = False
    secret: int | None = Field(default=None, description="revealed once the game is over")
    text: str = ""


class GuessState(State):
    seed: int | None = None
    done: bool = False


class HigherLowerEnv(Environment):
    action_type = GuessAction
    observation_type = GuessObservation
    state_type = GuessState
    inline_steps = True  # a step is a comparison

    def __init__(self, high: int = 100, max_guesses: int = 7) -> None:
        if isinstance(high, bool) or not isinstance(high, int) or not 2 <= high <= 1_000_000:
            raise ValueError(f"high must be an integer from 2 to 1000000, got {high!r}")
        if isinstance(max_guesses, bool) or not isinstance(max_guesses, int) or not 1 <= max_guesses <= 100:
            raise ValueError(f"max_guesses must be an integer from 1 to 100, got {max_guesses!r}")
        self.high, self.max_guesses = high, max_guesses
        self._state = GuessState()
        self._secret: int | None = None
        self._history: list[tuple[int, Hint]] = []

    def reset(self, seed: int | None = None, episode_id: str | None = None) -> GuessObservation:
        seed = new_seed() if seed is None else seed
        # The episode's keyed stream, not random.Random(seed): a program that knows the seeds could rerun that.
        self._secret = episode_rng(seed, "higher-lower/secret").randint(1, self.high)
        self._history = []
        self._state = GuessState(episode_id=episode_id or str(uuid.uuid4()), seed=seed_number(seed))
        return self._observe(reward=None, won=False)

    def step(self, action: GuessAction, timeout_s: float | None = None) -> GuessObservation:
        st = self._state
        if self._secret is None:
            raise EpisodeNotActive("no game has started: call reset first")
        if st.done:
            raise EpisodeNotActive("the game is over: call reset to play again")
        if not 1 <= action.guess <= self.high:
            raise InvalidAction(f"guess {action.guess} is outside 1..{self.high}; guess a number in that range")
        st.step_count += 1
        left = self.max_guesses - st.step_count
        if action.guess == self._secret:
            st.done = True
            return self._observe(reward=float(left + 1), won=True)
        self._history.append((action.guess, "higher" if self._secret > action.guess else "lower"))
        st.done = left == 0
        return self._observe(reward=0.0, won=False)

    @property
    def state(self) -> GuessState:
        return self._state

    def _observe(self, reward: float | None, won: bool) -> GuessObservation:
        st = self._state
        left = self.max_guesses - st.step_count
        lines = [f"{guess}: {hint}" for guess, hint in self._history]
        status = "found it" if won else ("out of guesses" if st.done else f"{left} guesses left")
        return GuessObservation(
            high=self.high,
            guesses_left=left,
            history=list(self._history),
            won=won,
            secret=self._secret if st.done else None,
            text="\n".join([f"secret in 1..{self.high}", *lines, status]),
            done=st.done,
            reward=reward,
        )

    # --- how strategy programs play: strategy(high, history) -> guess --------------------------
    def program_inputs(self, observation: GuessObservation) -> tuple[int, list[list[Any]]]:
        return observation.high, [[guess, hint] for guess, hint in observation.history]

    def program_action(self, value: Any) -> GuessAction:
        if type(value) is not int:  # not a bool, not a float, not an int subclass
            shown = repr(value)[:40] if type(value) in (str, float, bool, type(None)) else type(value).__name__
            raise ValueError(f"the strategy returned {shown}; expected an int from 1 to {self.high}")
        return GuessAction(guess=value)

    # --- how Gymnasium sees it (stratagem.gym.env): the interval the hints leave, as a Markov state ---
    def gym_spaces(self) -> tuple[Any, Any]:
        from gymnasium import spaces

        number = spaces.Discrete(self.high, start=1)
        observation = spaces.Dict(
            {"low": number, "high": number, "guesses_left": spaces.Discrete(self.max_guesses + 1)}
        )
        return observation, spaces.Discrete(self.high, start=1)

    def to_gym_obs(self, observation: GuessObservation) -> dict[str, Any]:
        import numpy as np

        low, high = 1, observation.high
        for guess, hint in observation.history:
            low, high = (max(low, guess + 1), high) if hint == "higher" else (low, min(high, guess - 1))
        if observation.secret is not None and observation.won:
            low = high = observation.secret
        return {"low": np.int64(low), "high": np.int64(high), "guesses_left": np.int64(observation.guesses_left)}

    def from_gym_action(self, action: Any, observation: GuessObservation) -> GuessAction:
        return GuessAction(guess=int(action))
