"""The fields each evaluation task reads from its files, named as the files' default columns.

A column mapping (``columns`` in a config, ``--columns`` on the command line) reads a field from a
column named otherwise: ``{"sentence1": "sentence_A"}``. Kept apart from the task modules so that
configs and the CLI can name the fields without importing numpy.
"""

STS = ("sentence1", "sentence2", "score")
PAIR_CLASSIFICATION = ("sentence1", "sentence2", "label")
CLASSIFICATION = ("text", "label")
CLUSTERING = ("text", "label")
RERANKING = ("query", "positive", "negative")
