"""The FastAPI app: online predictions, model listing, uploads for batch scoring."""
