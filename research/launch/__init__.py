"""Launching runs elsewhere: Slurm preflight, Optuna study storage, Cloud TPU, a distributed check."""
