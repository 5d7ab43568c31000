"""Scheduling policies as pure code, shared by the gateway and the simulator."""

from lengthwise.core.policy.base import Job, Policy
from lengthwise.core.policy.queue import WaitingQueue
from lengthwise.core.policy.registry import POLICIES, WRAPPERS, make_policy, parse_policy

__all__ = ["POLICIES", "WRAPPERS", "Job", "Policy", "WaitingQueue", "make_policy", "parse_policy"]
