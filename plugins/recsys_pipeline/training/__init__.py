"""Where models train: the glue between the warehouse's split and the model library in ``ml/``."""
