"""Where data is checked: the raw gate before dbt, the features gate before training.

``suites`` runs the Great Expectations suites in ``expectations/``; ``profiles`` keeps
each good load's profile for the volume and drift checks; ``quarantine`` keeps what a
gate refused, with its rule.
"""
