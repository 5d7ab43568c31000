"""Scheduling policies as pure code, shared by the gateway and the simulator."""

from lengthwise.policy.base import Job, Policy
from lengthwise.policy.queue import WaitingQueue
from lengthwise.policy.registry import POLICIES, WRAPPERS, make_policy, parse_policy

__all__ = ["POLICIES", "WRAPPERS", "Job", "Policy", "WaitingQueue", "make_policy", "parse_policy"]
