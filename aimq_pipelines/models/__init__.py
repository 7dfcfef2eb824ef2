"""The models domain of the code location: each group's chain from training data to the served
model, its asset checks, the ``train_models`` job and the retrain schedule."""
