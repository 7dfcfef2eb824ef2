"""The upload contract shared by the API and the scoring runs: files on disk, status records, the
queue message, the broker topology and retention.

The API side (``aimq_serving.api.intake``) stores a file and publishes an
``UploadMessage``; the Dagster side (``aimq_pipelines.uploads.sensors`` and ``aimq_pipelines.uploads``)
turns each message into exactly one scoring run. docs/batch.md states the contracts.
"""
