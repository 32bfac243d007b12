"""A game on an environment server, for the runner's call mode (``stratagem play --url``).

The parent holds the game; here the game is a server's, reached over OpenEnv's WebSocket protocol
and seen through the local environment class's observation model, so the program gets the same
arguments and its moves the same checks as in-process. The observation keeps the server's
``metadata`` (top-level or nested, as the client reads it), so a server's verdict on an episode
(``envs/outcome.py``: a wrong answer, a draw) is classified exactly as the local environment's. A
failing server is the server's fault, never the program's: it raises ServerFailed, and no result is
made up.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from stratagem.envs.core import Environment, InvalidAction, Observation


class ServerFailed(RuntimeError):
    """The environment server (``url``) failed; not the program's fault, so no result is made up."""


class ServersDown(ServerFailed):
    """Every environment server given is down (``client.pool.EnvPool``): nothing left to fail over to."""


class RemoteGame:
    """A game on an environment server (WebSocket), seen through the local class's observation model."""

    def __init__(self, env: Environment, url: str, check: bool = True) -> None:
        """``check=False`` when the server was already asked what it serves (an ``EnvPool`` asks once)."""
        from stratagem.client.http import EnvClient
        from stratagem.client.identify import check_serves

        self.env, self.url = env, url
        if check:
            check_serves(url, env)  # a server of another environment: WrongServer (a ValueError) names it
        try:
            self.client = EnvClient.connect(url)
        except (OSError, ValueError) as exc:
            raise ServerFailed(f"cannot reach the environment server at {url}: {exc}") from None

    def reset(self, seed: int, episode_id: str) -> Observation:
        return self._observation(self._call(self.client.reset, seed=seed, episode_id=episode_id))

    def step(self, action: Any) -> Observation:
        return self._observation(self._call(self.client.step, action))

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        from stratagem.client.wire import RemoteError

        try:
            return method(*args, **kwargs)
        except InvalidAction:
            raise  # the server refused the program's move: the program's fault, scored as such
        except (RemoteError, OSError) as exc:
            raise ServerFailed(f"the environment server failed: {exc}") from None

    def _observation(self, result: Any) -> Observation:
        try:
            fields = {**result.observation, "reward": result.reward, "done": result.done}
            nested = fields.pop("metadata", None)  # OpenEnv 0.10 may send null, or leave it out
            # the client's reading (the top-level copy, else the nested one) over the nested one
            fields["metadata"] = {**(nested if isinstance(nested, dict) else {}), **result.metadata}
            return self.env.observation_type.model_validate(fields)
        except ValidationError as exc:
            raise ServerFailed(
                f"the server's observation does not fit environment {type(self.env).__name__}: {exc}"
            ) from None

    def close(self) -> None:
        self.client.close()
