"""Atari 2600 games on ale-py: the environment, its wire models, frames, decoded objects and Gymnasium hooks."""

from stratagem.envs.atari.env import AtariEnv, resolve_game
from stratagem.envs.atari.frames import decode_frame, encode_frame, encode_png
from stratagem.envs.atari.models import AtariAction, AtariObservation, AtariState, Frame
from stratagem.envs.atari.objects import decode_objects

__all__ = ["AtariAction", "AtariEnv", "AtariObservation", "AtariState", "Frame", "decode_frame", "decode_objects",
           "encode_frame", "encode_png", "resolve_game"]  # fmt: skip
