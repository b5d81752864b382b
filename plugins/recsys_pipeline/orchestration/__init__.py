"""Where the pipeline is orchestrated: Airflow tasks (one per stage), the DAGs' shared defaults,
the features Asset, failure alerts, and the lease that lets one feature build at a time use the
warehouse. The DAG files in ``dags/`` only wire these."""
