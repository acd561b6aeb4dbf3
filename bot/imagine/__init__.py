"""/imagine, its result buttons, and the Edit modal."""

from bot.imagine.cog import setup

__all__ = ["setup"]
