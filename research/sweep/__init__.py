"""Optuna searches: the search space from config, seeded sampling, and a trial's link to its job.

The Hydra sweeper (``hydra_plugins/research_optuna_sweeper``) asks Optuna for trials and
launches each as a job; ``trial.reporter`` lets a job report its validation metric to its
trial so a pruner can stop it early; ``storage`` keeps the trials so a search continues.
``python -m research.study`` reads a finished study.
"""
