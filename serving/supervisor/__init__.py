"""`serve --workers N`: N worker processes on one port, kept alive by a supervisor."""

from serving.supervisor.supervisor import supervise

__all__ = ["supervise"]
