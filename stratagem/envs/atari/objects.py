"""Named objects decoded from Atari RAM: where the player, the ball and the enemies are, score, lives.

A strategy program cannot read pixels (no numpy in the sandbox, and frames are 100 kB), but the
128 bytes of RAM hold the game's own variables. These tables name them, per game.

Sources of the addresses (RAM index 0..127, as ``ALEInterface.getRAM()`` numbers them):

- positions: AtariARI's annotations (Anand et al., "Unsupervised State Representation Learning
  in Atari", NeurIPS 2019), ``atariari/benchmark/ram_annotations.py`` in
  github.com/mila-iqia/atari-representation-learning;
- score and lives: the ALE's own reward and terminal code for each game
  (``src/ale/games/supported/<Game>.cpp`` in github.com/Farama-Foundation/Arcade-Learning-Environment),
  which reads the same RAM (its ``readRam(0xE8)`` is index ``0xE8 & 0x7F`` = 104 here) and
  scores in BCD. AtariARI's Breakout ``score=84`` is not the score; the ALE's 76/77 are.

Positions are converted to screen pixels of the 160x210 RGB frame (x to the right, y down,
the object's top-left corner) by a fixed per-field offset (``value = sign * ram[address] +
offset``), measured on rendered frames and checked by ``tests/test_atari.py``, which finds each
sprite by its colour. The RAM is read at the end of a step, so an object that moves can be drawn
one frame behind its RAM value: a pixel off (two for Ms. Pac-Man, whose sprites change
shape as they animate). Only fields that test checks are listed: positions against the frame,
score and lives against the ALE's, Space Invaders' ``invaders_left`` against the hits scored.
AtariARI names that did not hold up (Space Invaders' ``enemies_y``: a counter, not a pixel row)
or that nothing checks (Breakout's brick bitmap, Ms. Pac-Man's fruit and dot count) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """``sign * (ram[address] & mask) + offset``; None while a ``present`` byte is 0 (nothing on screen)."""

    name: str
    address: int | None  # None: a constant of the game's layout (``offset``)
    offset: int = 0
    sign: int = 1
    mask: int = 0xFF
    present: tuple[int, ...] = ()

    def decode(self, ram: bytes | list[int]) -> int | None:
        for address in self.present:
            if ram[address] == 0:
                return None
        if self.address is None:
            return self.offset
        return self.sign * (ram[self.address] & self.mask) + self.offset


@dataclass(frozen=True)
class Score:
    """A BCD score over bytes of two digits each, lowest first (the ALE's ``getDecimalScore``)."""

    name: str
    addresses: tuple[int, ...]

    def decode(self, ram: bytes | list[int]) -> int:
        total, unit = 0, 1
        for address in self.addresses:
            byte = ram[address]
            total += unit * (10 * (byte >> 4) + (byte & 0x0F))
            unit *= 100
        return total


Decoder = Field | Score

# Pong: paddles 4x16 px, ball 2x4 px. The ball's bytes are 0 between points (x also at the start).
PONG = (
    Field("player_x", 46, offset=-48),
    Field("player_y", 51, offset=-13),
    Field("enemy_x", 45, offset=-48),
    Field("enemy_y", 50, offset=-15),
    Field("ball_x", 49, offset=-49, present=(49, 54)),
    Field("ball_y", 54, offset=-14, present=(49, 54)),
    Field("player_score", 14),
    Field("enemy_score", 13),
)

# Breakout: paddle 16x4 px on rows 189-192, ball 2x4 px. The ball's bytes are 0 between serves.
BREAKOUT = (
    Field("player_x", 72, offset=-47),
    Field("player_y", None, offset=189),
    Field("ball_x", 99, offset=-49, present=(99, 101)),
    Field("ball_y", 101, offset=9, present=(99, 101)),
    Score("score", (77, 76)),
    Field("lives", 57),
)

# Freeway: the chicken (7x8 px) climbs from y=187 to the far side; 10 lanes of 8x8 px cars,
# lane k's car on rows 28 + 16k. The chicken's byte counts up as it climbs, the cars' bytes
# count down as x grows (and wrap). Lane 5's car, a pixel a frame, is drawn a pixel further left.
FREEWAY_CAR_OFFSETS = (157, 157, 157, 157, 157, 156, 157, 157, 157, 157)
FREEWAY = (
    Field("player_x", None, offset=44),
    Field("player_y", 14, offset=193, sign=-1),
    Score("score", (103,)),
    *(Field(f"car{k}_x", 108 + k, offset=FREEWAY_CAR_OFFSETS[k], sign=-1) for k in range(10)),
    *(Field(f"car{k}_y", None, offset=28 + 16 * k) for k in range(10)),
)

# Space Invaders: the cannon (7x10 px) on rows 185-194; the invaders' block, 6 rows of 6.
SPACE_INVADERS = (
    Field("player_x", 28, offset=-1),
    Field("player_y", None, offset=185),
    Field("invaders_x", 26, offset=-1),
    Field("invaders_left", 17),
    Score("score", (104, 102)),
    Field("lives", 73),
)

# Ms. Pac-Man: sprites about 8x10 px; ghosts flicker (drawn on alternate frames).
MS_PACMAN = (
    Field("player_x", 10, offset=-12),
    Field("player_y", 16, offset=1),
    Field("blinky_x", 9, offset=-12),
    Field("blinky_y", 15, offset=1),
    Field("pinky_x", 8, offset=-12),
    Field("pinky_y", 14, offset=1),
    Field("inky_x", 7, offset=-12),
    Field("inky_y", 13, offset=1),
    Field("sue_x", 6, offset=-12),
    Field("sue_y", 12, offset=1),
    Score("score", (120, 121, 122)),
    Field("lives", 123, offset=1, mask=0x07),
)

# By ALE ROM name (``ale_py.roms``'s snake_case ids).
OBJECTS: dict[str, tuple[Decoder, ...]] = {
    "pong": PONG,
    "breakout": BREAKOUT,
    "freeway": FREEWAY,
    "space_invaders": SPACE_INVADERS,
    "ms_pacman": MS_PACMAN,
}


def decode_objects(rom: str, ram: bytes | list[int]) -> dict[str, int | None]:
    """The named objects of this game's RAM; empty for a game without a table."""
    return {field.name: field.decode(ram) for field in OBJECTS.get(rom, ())}
