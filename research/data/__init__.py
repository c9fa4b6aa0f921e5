"""Datasets: TFDS sources read without TensorFlow, splits, and the on-device transform.

``tfds_source.load`` (the ``_target_`` of every ``conf/data`` config) returns a
``base.Dataset``; ``digits`` builds the bundled dataset offline, ``splits`` carves
validation and streams with grain, ``transforms`` normalises and augments inside the
compiled step, and ``prepare`` is the one-time download CLI for the rest.
"""
