"""The bottom layer: policies, spec grammar, records and their metrics, token counting, SSE and small I/O helpers.

Imports nothing else from lengthwise; every other package may import it.
"""
