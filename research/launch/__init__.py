"""Launching runs elsewhere: Slurm preflight, Cloud TPU, a distributed check."""
