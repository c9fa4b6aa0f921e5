"""Evaluators: named, scheduled evaluations that tasks declare and config adds (contract: engine/api.py)."""
