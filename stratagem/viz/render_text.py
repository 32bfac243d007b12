"""Text for the renderers: cached fonts and strings, and text laid out on a fixed character grid.

Board games print their positions as character grids (tic-tac-toe's ``xo.``, a chess board), and
they only read right when every character sits in its own column. pygame's only bundled font,
freesansbold, is proportional, so ``draw_grid`` places each glyph in a cell of its own instead.
"""

from __future__ import annotations

from functools import lru_cache

from stratagem.viz._pygame import pygame

MIN_PX, MAX_PX = 12, 72


@lru_cache(maxsize=32)
def font(px: int) -> pygame.font.Font:
    return pygame.font.Font(None, px)  # pygame's bundled freesansbold: the same pixels on every machine


@lru_cache(maxsize=4096)
def text_surface(text: str, px: int, colour: tuple[int, int, int]) -> pygame.Surface:
    return font(px).render(text, True, colour)


@lru_cache(maxsize=64)
def cell(px: int) -> tuple[int, int]:
    """(width, height) of one grid cell at ``px``: the widest common glyph, one line."""
    f = font(px)
    return max(f.size(c)[0] for c in "MW@#0"), f.get_linesize()


def draw_grid(surface: pygame.Surface, text: str, area: pygame.Rect, colour: tuple[int, int, int]) -> None:
    """``text`` on a character grid, centred in ``area``: as large as fits, else wrapped and cut with '…'."""
    lines = text.expandtabs(4).split("\n") or [""]
    px = _largest_fitting(lines, area)
    cw, ch = cell(px)
    cols, rows = max(1, area.width // cw), max(1, area.height // ch)
    grid = [chunk for line in lines for chunk in (_chunks(line, cols) or [""])]
    if len(grid) > rows:
        grid = [*grid[: rows - 1], "…"]
    width = cw * max(len(line) for line in grid)
    x0 = area.x + max(0, (area.width - width) // 2)
    y0 = area.y + max(0, (area.height - ch * len(grid)) // 2)
    for r, line in enumerate(grid):
        for c, char in enumerate(line):
            if char != " ":
                glyph = text_surface(char, px, colour)
                surface.blit(glyph, glyph.get_rect(center=(x0 + c * cw + cw // 2, y0 + r * ch + ch // 2)))


def text_lines(text: str, px: int, max_width: int) -> list[str]:
    """``text`` word-wrapped to ``max_width`` pixels at ``px``."""
    f, lines = font(px), []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and f.size(candidate)[0] > max_width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _largest_fitting(lines: list[str], area: pygame.Rect) -> int:
    cols, rows = max(1, max(len(line) for line in lines)), len(lines)
    for px in range(MAX_PX, MIN_PX - 1, -2):
        cw, ch = cell(px)
        if cols * cw <= area.width and rows * ch <= area.height:
            return px
    return MIN_PX


def _chunks(line: str, cols: int) -> list[str]:
    return [line[i : i + cols] for i in range(0, len(line), cols)]
