"""What an environment may say of a finished episode beyond ``won``: ``metadata["outcome"]`` of its last observation.

Plain JSON in the observation's ``metadata``, so it travels over the wire unchanged (OpenEnv keeps
``metadata`` inside the observation, and stratagem also at the top level) and any environment, ours
or a user's, can use it:

- ``"win"``, ``"draw"``, ``"loss"``: how the game ended (OpenSpiel says it). The runner reads ``"draw"``:
  an episode played to its end, not won, that the environment calls a tie (``EpisodeResult.draw``).
  ``won`` on the observation stays the word for a win.
- ``"wrong_answer"``: the program answered, in the right form, with a wrong result (matmul: a wrong
  product). The episode is over (``done``, reward 0) rather than refused with an error status, so a
  client of the server still gets an observation; but the runner scores the episode as an error of the
  program (kind ``wrong_answer``, below a loss: ``agents/rewards.py``), never as a game played and lost.
  ``metadata["message"]`` says what was wrong (matmul: the first wrong cell).

Environments that cannot draw or be wrong (2048, Atari) say nothing: the absence means "judge by ``won``".
"""

from __future__ import annotations

from typing import Any

OUTCOME, MESSAGE = "outcome", "message"  # the metadata keys
WIN, DRAW, LOSS, WRONG_ANSWER = "win", "draw", "loss", "wrong_answer"
ERROR_OUTCOMES = frozenset({WRONG_ANSWER})  # outcomes that are the program's error, not a game's result


def wrong_answer(message: str) -> dict[str, Any]:
    """The metadata of an episode ended by a wrong result; ``message`` says what was wrong."""
    return {OUTCOME: WRONG_ANSWER, MESSAGE: message}


def episode_outcome(metadata: Any) -> tuple[str | None, str]:
    """(outcome, message) from a finished episode's last ``metadata``; (None, "") when it says nothing we know."""
    if not isinstance(metadata, dict):
        return None, ""
    outcome, message = metadata.get(OUTCOME), metadata.get(MESSAGE)
    if outcome not in (WIN, DRAW, LOSS, WRONG_ANSWER):
        return None, ""
    return outcome, message if isinstance(message, str) else ""
