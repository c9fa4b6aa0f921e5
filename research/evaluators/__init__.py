"""Evaluators: named, scheduled evaluations that tasks declare and config adds (the contract: engine/api.py)."""
