"""The bottom layer: policies, spec grammar, records and their metrics, token counting, SSE, small I/O helpers,
rank statistics, the response headers and usage fields, the cache root and the packaged data.

Imports nothing else from lengthwise; every other package may import it.
"""
