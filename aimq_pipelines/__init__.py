"""AIMQ pipelines: the Dagster code location (model chain, batch scoring)."""
