"""Where models are shown: the "Recsys models" page of the Airflow UI, read from the bucket."""
