"""Comparing a converted model with its reference: the passes, statistics, verdict and report."""
