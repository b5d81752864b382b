"""Where a run is shown to people: one reading of its records (``summary``), the HTML report,
the model card; the CLI and the models page read the same summary."""
