"""Scheduling policies as pure code, shared by the gateway and the simulator."""

from lengthwise.core.policy.base import Job, Policy
from lengthwise.core.policy.queue import WaitingQueue
from lengthwise.core.policy.registry import DEFAULT_POLICY, make_policy
from lengthwise.core.policy.service import ServiceTime

__all__ = ["DEFAULT_POLICY", "Job", "Policy", "ServiceTime", "WaitingQueue", "make_policy"]
