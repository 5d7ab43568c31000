"""Datasets, traces and arrival processes."""
