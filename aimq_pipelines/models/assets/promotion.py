"""The champion/challenger check: a blocking check on the new trained model, before export and
promotion (``aimq_pipelines/models/promotion.py`` says how it judges)."""

import dagster as dg

from aimq_pipelines.models.promotion import judge
from aimq_pipelines.models.resources import ModelStoreResource
from aimq_pipelines.models.training import TrainedModel


def build_champion_challenger(group: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey([group, "trained_model"]),
        name="champion_challenger",
        blocking=True,
        description=(
            "Holdout MAE no worse than the served version's on the same rows, by more than AIMQ_PROMOTION_MARGIN: "
            "otherwise the served version stays."
        ),
    )
    def champion_challenger(trained_model: TrainedModel, model_store: ModelStoreResource) -> dg.AssetCheckResult:
        verdict = judge(trained_model, model_store.store(), group, model_store.settings().promotion_margin)
        return dg.AssetCheckResult(
            passed=verdict.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=verdict.metadata(),
            description=verdict.reason,
        )

    return champion_challenger
