"""Datasets: TFDS sources read without TensorFlow, splits, and the on-device transform.

``tfds_source.load`` (the ``_target_`` of every ``conf/data`` config) returns a
``base.Dataset``; ``digits`` builds the bundled dataset offline, ``splits`` carves
validation and streams with grain, ``transforms`` normalises and augments inside the
compiled step, and ``prepare`` is the one-time download CLI for the rest.

A user's own files: ``table`` (CSV, Parquet), ``array_files`` (.npz, .npy), ``corpus``'s
``text_files`` and ``image_folder``, each one ``data.path``, sharing ``own_files`` (own or carved
splits) and ``splits.carve`` (stratified carving); ``overview`` shows any dataset
(``python -m research.inspect`` composes a config to show it).
"""
