"""AIMQ serving: the model store, the shared predictor and the FastAPI app."""
