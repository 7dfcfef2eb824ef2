"""The ``aimq`` command line: a terminal client of the API, the model store and the local Dagster
instance. Not part of the Dagster code location (``aimq_pipelines``), which it only runs."""
