"""Discrete-event simulator of a continuous-batching engine."""
