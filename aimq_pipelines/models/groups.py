"""The Dagster asset group of each model group's chain (``model_A``), one name for assets and jobs."""


def group_name(group: str) -> str:
    return f"model_{group}"
