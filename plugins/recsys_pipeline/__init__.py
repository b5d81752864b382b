"""recsys-pipeline's library: one subpackage per stage of the pipeline, in the order data flows.

``ingest`` (data enters) -> ``quality`` (it is checked) -> ``features`` (dbt transforms it)
-> ``training`` (models train, with ``ml/``) -> ``release`` (a model is decided on and
published) -> ``reporting`` and ``ui`` (it is shown). ``orchestration`` holds the Airflow
tasks that call each stage, ``run`` the identity and files of one run, and ``settings``,
``warehouse``, ``storage`` and ``services`` the infrastructure every stage shares.
"""
