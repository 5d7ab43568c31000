"""Scheduling policies as pure code, shared by the gateway and the simulator."""

from lengthwise.core.policy.base import Job, Policy
from lengthwise.core.policy.queue import WaitingQueue
from lengthwise.core.policy.registry import make_policy

__all__ = ["Job", "Policy", "WaitingQueue", "make_policy"]
