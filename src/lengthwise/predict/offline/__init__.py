"""Offline research: self-prediction evaluation, reports, training and comparison CLIs. Never imported by the gateway."""
