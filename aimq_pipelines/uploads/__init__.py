"""Batch scoring in Dagster: one run of ``score_upload`` per uploaded file."""
