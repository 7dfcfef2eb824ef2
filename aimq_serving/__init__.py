"""AIMQ serving: the model store, the loaded models the API and batch scoring share, and the FastAPI app."""
