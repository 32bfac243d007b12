"""Drawing one recorded step: a pure function from (step, header, width) to a pygame Surface.

The window (``viewer.py``) and the exporters (``export.py``) call only ``render_step`` and
``side_by_side``, so what a GIF shows is exactly what the window showed. The same inputs always
give the same pixels; the caches below (fonts, text, tiles) only save work, they hold nothing
that changes a picture. No display is needed: every surface is a plain software surface.

Panels have a fixed size per kind and width, so every frame of an episode has the same size
(video encoders need that): a label strip on top naming the program (its hash, as ``play``
prints it) and its score in the episode, so that two panels side by side say which is which;
then a 2048 board, an Atari screen, or a text view (OpenSpiel's observation string, else the
observation as ``key: value`` lines); and a status bar below: environment, seed, step, reward,
running score. pygame's font draws capitals about half as tall as the size asked for, so text is
never drawn smaller than ``MIN_TEXT_PX`` (capitals 8 pixels tall; the 2048 boxes' all-capital
captions 7) and the label never smaller than ``LABEL_MIN_PX`` (11 pixels): a panel stays readable
at the 240 pixels of a run's ``best_episode.gif``. (A board game's grid too big for its area is
the exception: ``render_text.draw_grid`` shrinks it to fit, down to its own ``MIN_PX``.)
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import numpy as np

from stratagem.viz._pygame import pygame
from stratagem.viz.episodes import kind_of
from stratagem.viz.render_text import draw_grid, font, text_lines
from stratagem.viz.render_text import text_surface as _text

DEFAULT_WIDTH = {"2048": 400, "atari": 320, "openspiel": 480, "text": 480}
MIN_WIDTH = 160
SEPARATOR = 8  # pixels between the two panels of a side-by-side frame
MIN_TEXT_PX = 16  # pygame's font at 16 "px": capitals 8 pixels tall, the least that reads in a GIF
LABEL_MIN_PX = 22  # the program's label: capitals and digits 11 pixels tall

PAGE = (250, 248, 239)
BOARD = (187, 173, 160)
DARK_TEXT, LIGHT_TEXT = (119, 110, 101), (249, 246, 242)
BAR, BAR_TEXT = (36, 36, 42), (225, 225, 230)
LABEL, LABEL_TEXT = (20, 20, 24), (255, 255, 255)
NOTE = (255, 96, 96)
# The original game's palette; tiles past 2048 share the last colour.
TILE_COLOURS = {0: (205, 193, 180), 2: (238, 228, 218), 4: (237, 224, 200), 8: (242, 177, 121),
                16: (245, 149, 99), 32: (246, 124, 95), 64: (246, 94, 59), 128: (237, 207, 114),
                256: (237, 204, 97), 512: (237, 200, 80), 1024: (237, 197, 63), 2048: (237, 194, 46)}  # fmt: skip
BIG_TILE = (60, 58, 50)
ATARI_SCREEN = (160, 210)  # width, height of the ALE's frame


def tile_colour(value: int) -> tuple[int, int, int]:
    return TILE_COLOURS.get(value, BIG_TILE)


def tile_text_colour(value: int) -> tuple[int, int, int]:
    return DARK_TEXT if value in (2, 4) else LIGHT_TEXT


def render_step(step: dict[str, Any], header: dict[str, Any], size: int | None = None, *,
                objects: bool = True) -> pygame.Surface:  # fmt: skip
    """One step as a picture ``size`` pixels wide (default: per kind); ``objects``: Atari's decoded objects."""
    _fonts_ready()
    kind = kind_of(step["observation"])
    width = panel_width(kind, size)
    surface = pygame.Surface(panel_size(kind, width))
    if kind == "2048":
        _draw_2048(surface, step, width)
    elif kind == "atari":
        _draw_atari(surface, step, width, objects)
    else:
        _draw_text_view(surface, step, header, width)
    _draw_status(surface, step, header, width)
    _draw_label(surface, step, header, width)
    return surface


def panel_width(kind: str, size: int | None) -> int:
    width = DEFAULT_WIDTH[kind] if size is None else int(size)
    if width < MIN_WIDTH:
        raise ValueError(f"size {width} is too small to draw a step legibly; give --size {MIN_WIDTH} or more")
    return width + (width & 1)  # even: H.264 needs even frame sizes


def panel_size(kind: str, width: int) -> tuple[int, int]:
    """(width, height) of a panel: the label, the kind's own area (with its header strip) and the status bar."""
    if kind == "2048":
        body = _head_2048(width) + width
    elif kind == "atari":
        body = _strip(width) + _even(width * ATARI_SCREEN[1] / ATARI_SCREEN[0])
    else:
        body = _strip(width) + _even(width * 0.6)
    return width, label_height(width) + body + status_height(width)


def side_by_side(left: pygame.Surface, right: pygame.Surface) -> pygame.Surface:
    """Two panels next to each other, top-aligned, with a dark separator."""
    height = max(left.get_height(), right.get_height())
    out = pygame.Surface((left.get_width() + SEPARATOR + right.get_width(), height))
    out.fill(BAR)
    out.blit(left, (0, 0))
    out.blit(right, (left.get_width() + SEPARATOR, 0))
    return out


def to_array(surface: pygame.Surface) -> np.ndarray:
    """An (height, width, 3) uint8 copy, the layout image writers expect."""
    return pygame.surfarray.array3d(surface).swapaxes(0, 1).copy()


def to_png(surface: pygame.Surface) -> bytes:
    """The picture as PNG file bytes (what the browser page, ``/web``, shows), encoded by pygame itself."""
    import io

    out = io.BytesIO()
    pygame.image.save(surface, out, "frame.png")
    return out.getvalue()


# --- 2048 --------------------------------------------------------------------------
def board_geometry(width: int, n: int = 4) -> tuple[pygame.Rect, list[pygame.Rect]]:
    """The board's rectangle and each tile's, row by row, for a panel ``width`` wide (tests sample these)."""
    pad = max(6, width // 25)
    side = width - 2 * pad
    board = pygame.Rect(pad, label_height(width) + _head_2048(width), side, side)
    gap = max(3, side // 32)
    tile = (side - (n + 1) * gap) // n
    offset = (side - n * tile - (n + 1) * gap) // 2
    x0, y0 = board.x + offset + gap, board.y + offset + gap
    tiles = [pygame.Rect(x0 + c * (tile + gap), y0 + r * (tile + gap), tile, tile) for r in range(n) for c in range(n)]
    return board, tiles


def _head_2048(width: int) -> int:
    return _even(max(width * 0.17, 46))  # room for its two lines of text at their least size


def _draw_2048(surface: pygame.Surface, step: dict[str, Any], width: int) -> None:
    obs = step["observation"]
    board_values = obs["board"]
    surface.fill(PAGE)
    n = len(board_values)
    board, tiles = board_geometry(width, n)
    pygame.draw.rect(surface, BOARD, board, border_radius=max(3, width // 60))
    for rect, value in zip(tiles, (v for row in board_values for v in row), strict=False):
        surface.blit(_tile(int(value or 0), rect.width), rect.topleft)
    head, top = _head_2048(width), label_height(width)
    pad = board.x
    box_w = (width - 2 * pad - 2 * pad // 2) // 3
    move = step.get("action_label") or "start"
    for i, (label, value) in enumerate((("SCORE", f"{obs.get('score', step.get('total', 0)):g}"),
                                        ("MOVE", f"{step.get('step', 0)}"), ("LAST MOVE", move))):  # fmt: skip
        box = pygame.Rect(pad + i * (box_w + pad // 2), top + pad // 2, box_w, head - pad)
        pygame.draw.rect(surface, BOARD, box, border_radius=max(3, width // 80))
        small = _text(label, max(14, head // 5), (238, 228, 218))  # capitals only: 7 pixels tall read
        surface.blit(small, small.get_rect(midtop=(box.centerx, box.y + max(1, head // 16))))
        big = _fitted(value, max(MIN_TEXT_PX, head // 3), box.width - 4)
        surface.blit(big, big.get_rect(midbottom=(box.centerx, box.bottom - max(1, head // 16))))


@lru_cache(maxsize=512)
def _tile(value: int, side: int) -> pygame.Surface:
    tile = pygame.Surface((side, side))
    tile.fill(BOARD)
    pygame.draw.rect(tile, tile_colour(value), tile.get_rect(), border_radius=max(2, side // 16))
    if value:
        digits = len(str(value))
        px = int(side * (0.55 if digits <= 2 else 0.45 if digits == 3 else 0.36 if digits == 4 else 0.28))
        text = _text(str(value), px, tile_text_colour(value))
        tile.blit(text, text.get_rect(center=(side // 2, side // 2)))
    return tile


# --- Atari -------------------------------------------------------------------------
def _draw_atari(surface: pygame.Surface, step: dict[str, Any], width: int, objects: bool) -> None:
    obs = step["observation"]
    strip, top = _strip(width), label_height(width)
    surface.fill(BAR)
    action = step.get("action_label") or "start"
    title = f"{obs.get('game_name', 'Atari')}   score {obs.get('score', 0):g}   lives {obs.get('lives', 0)}   {action}"
    surface.blit(_text(title, _strip_font(width), BAR_TEXT),
                 (max(4, width // 60), top + (strip - _strip_font(width)) // 2))  # fmt: skip
    area = atari_screen_rect(width)
    screen = step.get("screen")
    if screen is not None:
        frame = pygame.surfarray.make_surface(np.asarray(screen).swapaxes(0, 1))
        surface.blit(pygame.transform.scale(frame, area.size), area.topleft)
    else:
        surface.fill((0, 0, 0), area)
    if objects or screen is None:
        _draw_objects(surface, obs.get("objects") or {}, area, filled=screen is None)
    if screen is None and step.get("note"):
        px = max(MIN_TEXT_PX, width // 32)
        lines = text_lines(step["note"], px, area.width - 8)
        for i, line in enumerate(lines[:4]):
            surface.blit(_text(line, px, NOTE), (4, area.y + 4 + i * (px + 2)))


def atari_screen_rect(width: int) -> pygame.Rect:
    """Where the 160x210 screen is drawn, scaled to the panel's width (tests sample it)."""
    return pygame.Rect(0, label_height(width) + _strip(width), width, _even(width * ATARI_SCREEN[1] / ATARI_SCREEN[0]))


def _draw_objects(surface: pygame.Surface, objects: dict[str, Any], area: pygame.Rect, filled: bool) -> None:
    """Each ``<name>_x``/``<name>_y`` pair as a marked box at its screen position (top-left corner)."""
    sx, sy = area.width / ATARI_SCREEN[0], area.height / ATARI_SCREEN[1]
    px = max(MIN_TEXT_PX, area.width // 30)
    for key, x in objects.items():
        if not key.endswith("_x"):
            continue
        name, y = key[:-2], objects.get(key[:-2] + "_y")
        if not isinstance(x, int) or not isinstance(y, int):
            continue
        colour = _object_colour(name)
        box = pygame.Rect(area.x + round(x * sx), area.y + round(y * sy), max(4, round(4 * sx)), max(6, round(8 * sy)))
        pygame.draw.rect(surface, colour, box, 0 if filled else 2)
        label = _text(name, px, colour)
        place = label.get_rect(bottomleft=(box.x, box.y - 1))
        if place.top < area.top:  # no room above (the ball at the top): below the box
            place.top = box.bottom + 1
        surface.blit(label, place.clamp(area))  # inside the screen: never over the strip or off the edge


@lru_cache(maxsize=64)
def _object_colour(name: str) -> tuple[int, int, int]:
    palette = ((255, 230, 0), (0, 230, 255), (255, 80, 200), (120, 255, 120), (255, 150, 40), (180, 140, 255))
    return palette[sum(map(ord, name)) % len(palette)]


# --- OpenSpiel and everything else -------------------------------------------------
def _draw_text_view(surface: pygame.Surface, step: dict[str, Any], header: dict[str, Any], width: int) -> None:
    obs = step["observation"]
    strip, top = _strip(width), label_height(width)
    surface.fill(PAGE)
    pygame.draw.rect(surface, BOARD, (0, top, width, strip))
    if kind_of(obs) == "openspiel":
        title, body = str(obs.get("game", header.get("env", ""))), obs["observation_string"]
        if obs.get("returns") is not None:
            title += f"   returns {obs['returns']}"
    else:
        title, body = str(header.get("env", "")), _observation_text(obs)
    action = step.get("action_label")
    title += f"   played {action}" if action else "   start"
    surface.blit(_text(title, _strip_font(width), (255, 255, 255)), (max(4, width // 60),
                 top + (strip - _strip_font(width)) // 2))  # fmt: skip
    area = pygame.Rect(0, top + strip, width, _even(width * 0.6)).inflate(-width // 20, -width // 40)
    draw_grid(surface, body, area, DARK_TEXT)


def _observation_text(obs: dict[str, Any]) -> str:
    """The env's own ``text`` when it has one, else one ``key: value`` line per field (compact JSON)."""
    if isinstance(obs.get("text"), str):
        return obs["text"]
    return "\n".join(f"{k}: {json.dumps(v, separators=(', ', ': '))}" for k, v in obs.items())


# --- the status bar ----------------------------------------------------------------
def status_height(width: int) -> int:
    return _even(2 * (_status_font(width) + 4) + 8)


def _status_font(width: int) -> int:
    return max(MIN_TEXT_PX, width // 26)


def _draw_status(surface: pygame.Surface, step: dict[str, Any], header: dict[str, Any], width: int) -> None:
    height = status_height(width)
    top = surface.get_height() - height
    surface.fill(BAR, (0, top, width, height))
    reward = step.get("reward")
    reward_text = "-" if not isinstance(reward, (int, float)) else f"{reward:+g}"
    where = f"step {step.get('step', 0)}/{step.get('last', '?')}"
    line1 = f"{header.get('env', '?')}  ·  seed {header.get('seed', '?')}  ·  {where}"  # the program: in the label
    line2 = f"reward {reward_text}  ·  score {step.get('total', 0):g}{_ending(step)}"
    px, x = _status_font(width), max(4, width // 60)
    surface.blit(_text(line1, px, BAR_TEXT), (x, top + 4))
    surface.blit(_text(line2, px, BAR_TEXT), (x, top + 8 + px))


def _ending(step: dict[str, Any]) -> str:
    end = step.get("end")
    if end is None:
        return ""
    if end.get("cut"):
        return "  ·  recording cut off here"
    if end.get("error"):
        return f"  ·  stopped: {end['error']}"
    return "  ·  won" if end.get("won") else "  ·  game over"


# --- the label: which program, and how it did -------------------------------------
def label_height(width: int) -> int:
    return _even(label_font(width) * 1.4)


def label_font(width: int) -> int:
    return max(LABEL_MIN_PX, width // 14)


def panel_label(step: dict[str, Any], header: dict[str, Any]) -> tuple[str, str]:
    """(the program's hash, its score): the episode's final score when the recording has its result, else the
    running score, marked "so far" (a recording cut off before its end)."""
    program = str(header.get("program") or "no program")
    result = step.get("result")
    final = result.get("score") if isinstance(result, dict) else None
    if isinstance(final, (int, float)) and not isinstance(final, bool):
        return program, f"score {_number(final)}"
    return program, f"score {_number(step.get('total', 0))} so far"


def _draw_label(surface: pygame.Surface, step: dict[str, Any], header: dict[str, Any], width: int) -> None:
    """The program's hash on the left, its score on the right, as large as fits (never under LABEL_MIN_PX)."""
    height, margin = label_height(width), max(4, width // 40)
    surface.fill(LABEL, (0, 0, width, height))
    program, score = panel_label(step, header)
    px = label_font(width)
    room = width - 2 * margin - px  # a gap of one em between the two
    for name, said in ((program, score), (program[:8], score), (program[:8], score.removeprefix("score "))):
        if font(px).size(name)[0] + font(px).size(said)[0] <= room:
            break
    left, right = _text(name, px, LABEL_TEXT), _text(said, px, LABEL_TEXT)
    surface.blit(left, left.get_rect(midleft=(margin, height // 2)))
    surface.blit(right, right.get_rect(midright=(width - margin, height // 2)))


def _number(value: Any) -> str:
    """2484.0 as '2,484', 0.25 as '0.25', -3 as '-3'."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "?"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}"


def _fitted(text: str, px: int, max_width: int) -> pygame.Surface:
    """``text`` at ``px``, or smaller down to MIN_TEXT_PX so that it fits ``max_width`` (else it is cut)."""
    while px > MIN_TEXT_PX and font(px).size(text)[0] > max_width:
        px -= 1
    return _text(text, px, (255, 255, 255))


# --- small shared pieces -----------------------------------------------------------
def _strip(width: int) -> int:
    return _even(_strip_font(width) * 1.8)


def _strip_font(width: int) -> int:
    return max(MIN_TEXT_PX, width // 22)


def _even(value: float) -> int:
    n = round(value)
    return n + (n & 1)


def _fonts_ready() -> None:
    if not pygame.font.get_init():
        pygame.font.init()
