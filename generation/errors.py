"""Errors raised by the generation package; each carries a message a Discord user understands."""

from __future__ import annotations


class UserFacingError(Exception):
    """Base for errors whose message can be shown to the person who asked."""

    @property
    def user_message(self) -> str:
        """The text to show the requester."""
        return str(self)


class InvalidRequest(UserFacingError, ValueError):
    """A request or an input file broke a rule; the message names the rule and the value."""


class ModelUnavailable(UserFacingError):
    """A configured model could not be found or loaded."""


class GenerationError(UserFacingError):
    """The pipeline failed while generating."""


class OutOfMemory(GenerationError):
    """The GPU ran out of memory; the worker may retry with a smaller batch."""


class Cancelled(UserFacingError):
    """The call was cancelled before it finished."""
