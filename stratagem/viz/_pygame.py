"""pygame, imported quietly, and started with or without a screen.

pygame prints a greeting at import unless ``PYGAME_HIDE_SUPPORT_PROMPT`` is set first, its
``pkgdata`` (imported with it) imports ``pkg_resources``, which setuptools 80 deprecates
with a warning at import, and SDL picks its video driver at ``pygame.init``: so every viz module
imports pygame from here, and exports call ``start(headless=True)`` before anything is drawn.
"""

from __future__ import annotations

import os
import sys
import warnings

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

with warnings.catch_warnings():  # a warning for pygame's maintainers, not for ours or our users
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    import pygame

__all__ = ["has_display", "pygame", "start"]


def has_display() -> bool:
    """Whether a window could open: a Linux/BSD desktop needs $DISPLAY or $WAYLAND_DISPLAY, or an explicit driver."""
    if os.environ.get("SDL_VIDEODRIVER"):
        return True
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True  # macOS and Windows always have one


def start(headless: bool) -> None:
    """Initialise pygame; headless uses SDL's dummy drivers, so exports run on servers and in CI."""
    if headless and not pygame.display.get_init():
        os.environ["SDL_VIDEODRIVER"] = "dummy"
        os.environ["SDL_AUDIODRIVER"] = "dummy"
    if not pygame.display.get_init():
        pygame.display.init()
    if not pygame.font.get_init():
        pygame.font.init()
