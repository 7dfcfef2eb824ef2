"""Batch scoring of uploaded files: storage, status records, the queue contract and the scorer.

The API side (``aimq_serving.api.routers.uploads``) stores a file and publishes an
``UploadMessage``; the Dagster side (``aimq_pipelines.uploads.sensors`` and ``aimq_pipelines.uploads``)
turns each message into exactly one scoring run. docs/batch.md states the contracts.
"""
