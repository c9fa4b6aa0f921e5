"""Evaluators: named, scheduled evaluations that tasks declare and config adds (see base.py)."""
