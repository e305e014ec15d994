"""A reference guest agent for tests and demos (``qproxy agent --listen unix:PATH``)."""

from .agent import ReferenceAgent
from .commands import Command, CommandError

__all__ = ["Command", "CommandError", "ReferenceAgent"]
