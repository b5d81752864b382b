"""Where data is transformed: the dbt project, run as Airflow tasks, and what is known about each build."""
