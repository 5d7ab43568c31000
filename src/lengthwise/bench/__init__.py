"""Load generator, metrics, reports and plots."""
