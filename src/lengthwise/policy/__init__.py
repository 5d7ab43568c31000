"""Scheduling policies as pure code, shared by the gateway and the simulator."""

from lengthwise.policy.base import Job, Policy
from lengthwise.policy.queue import WaitingQueue

__all__ = ["Job", "Policy", "WaitingQueue"]
