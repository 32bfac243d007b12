"""Which environment a server serves, asked before an episode is played on it (``play --url``).

A server of another environment answers every reset with observations the local model cannot read,
and pydantic's list of everything that does not fit says nothing about why. ``check_serves`` asks
the server first, through routes every OpenEnv server has: ``/schema`` (the observation's fields),
``/state`` (the game, for environments whose state names one: ``game_name``) and ``/metadata`` (a
name, for the message). It refuses only a server that is sure not to fit: one whose observations
lack fields the local model needs, or that plays another game. A server that does not say (a route
missing or failing, a name unknown here: OpenEnv's servers name their class) is given the benefit
of the doubt; an unreachable one is left for the client to report.
"""

from __future__ import annotations

from typing import Any

import httpx

from stratagem.client.wire import http_url
from stratagem.envs.core import Environment

LIFTED = {"done", "reward", "metadata"}  # top-level fields of a reply, not the observation's own


class WrongServer(ValueError):
    """The server serves another environment (or another game); the message names both and what to do."""


def check_serves(url: str, env: Environment, timeout_s: float = 10.0) -> None:
    """Raise ``WrongServer`` when the server at ``url`` surely serves something ``env`` cannot play.

    ``env`` is the local environment whose observation model reads the server's replies.
    """
    game = _game(_local_state(env))
    base = http_url(url)
    with httpx.Client(timeout=timeout_s) as http:
        schema = _get(http, base + "/schema")
        if schema is None:
            return  # not there (the client's connection error will say so), or a server that does not say
        missing, unexpected = _misfit(env, schema)
        served_game = None
        if game is not None or missing or unexpected:  # the server's game: to compare, or to name it
            served_game = _game(_get(http, base + "/state"))
        if missing or unexpected or (game and served_game and served_game.lower() != game.lower()):
            metadata = _get(http, base + "/metadata") or {}
            name = metadata.get("name") if isinstance(metadata.get("name"), str) else None
            raise WrongServer(_message(url, env, game, name, served_game, missing, unexpected))


def _get(http: httpx.Client, url: str) -> dict[str, Any] | None:
    """The JSON object at ``url``, or None when the server does not answer with one."""
    try:
        response = http.get(url)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _local_state(env: Environment) -> dict[str, Any]:
    try:
        return env.state.model_dump()
    except Exception:  # an environment whose state needs a reset first: it names no game
        return {}


def _game(state: dict[str, Any] | None) -> str | None:
    game = (state or {}).get("game_name")
    return game.strip() if isinstance(game, str) and game.strip() else None


def _misfit(env: Environment, schema: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """Fields the local observation needs that the server's lacks; fields the server always sends that the
    local model forbids. Both empty when the server's schema is not there or not a plain object schema."""
    served = (schema or {}).get("observation")
    if not isinstance(served, dict) or not isinstance(served.get("properties"), dict):
        return [], []
    model = env.observation_type
    local = model.model_json_schema()
    props, required = set(served["properties"]), set(served.get("required") or ())
    missing = [f for f in local.get("required", ()) if f not in props and f not in LIFTED]
    unexpected = []
    if model.model_config.get("extra") == "forbid":
        unexpected = sorted(f for f in required - set(local.get("properties", {})) if f not in LIFTED)
    return missing, unexpected


def _spec_for(env: Environment, game: str | None) -> tuple[str | None, Any]:
    """The registered name (and spec) of ``env``'s kind: the manifest naming its class, its game if several do."""
    from stratagem.envs.spec import registry

    cls = type(env)
    found = [  # by name first: importing only classes of this name, which (env is one) are imported already
        (name, spec)
        for name, spec in sorted(registry().items())
        if spec.entry_point.rpartition(":")[2] == cls.__name__ and _env_class(spec) is cls
    ]
    if game is not None:  # several manifests of one class (atari, pong, breakout): the one of this game
        for name, spec in sorted(found, key=lambda item: item[0].lower() != game.lower()):
            if str(spec.params.get("game", "")).lower() == game.lower():
                return name, spec
    return found[0] if found else (None, None)


def _env_class(spec: Any) -> type | None:
    try:
        return spec.env_class()
    except Exception:  # a manifest whose class does not import: not this one
        return None


def _registered(name: str | None) -> Any:
    from stratagem.envs.spec import registry

    return registry().get(name) if name else None


def _label(name: str | None, game: str | None) -> str:
    if name is None:
        return f"game {game!r}" if game else "another environment"
    return f"{name!r} ({game})" if game and game.lower() != name.lower() else repr(name)


def _game_flag(spec: Any, game: str | None) -> str:
    """``-p game=G`` when ``spec`` takes a game and ``game`` is not its default."""
    if spec is None or not game or "game" not in spec.params:
        return ""
    return "" if game.lower() == str(spec.params["game"]).lower() else f" -p game={game}"


def _message(
    url: str,
    env: Environment,
    game: str | None,
    served_name: str | None,
    served_game: str | None,
    missing: list[str],
    unexpected: list[str],
) -> str:
    local_name, local_spec = _spec_for(env, game)
    wanted = _label(local_name or type(env).__name__, game)
    text = f"the server at {url} serves {_label(served_name, served_game)}, not {wanted}"
    if missing:
        text += f": its observations have no {_few(missing)}"
    elif unexpected:
        text += f": its observations carry {_few(unexpected)}, which {wanted} has not"
    advice = []
    if local_name is not None:
        advice.append(f"start `stratagem serve {local_name}{_game_flag(local_spec, game)}` and pass its URL")
    served_spec = _registered(served_name)
    if served_spec is not None:
        command = f"stratagem play {served_name}{_game_flag(served_spec, served_game)} --strategy FILE --url {url}"
        advice.append(f"play {served_game or served_name} on it ({command})")
    return text + (f". To fix: {'; or '.join(advice)}" if advice else "")


def _few(fields: list[str]) -> str:
    return ", ".join(fields[:6]) + (f" and {len(fields) - 6} more" if len(fields) > 6 else "")
