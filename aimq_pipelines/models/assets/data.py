"""Stage 1: training data, generated or read, validated against the schema."""

from collections.abc import Iterator

import dagster as dg

from aimq_pipelines.models.groups import group_name
from aimq_pipelines.models.resources import TrainingDataSource
from aimq_pipelines.models.training import frame_hash, validate_training_frame

MIN_ROWS = 1_000
MAX_REJECTED_FRACTION = 0.05


def build_training_data(group: str) -> list[dg.AssetsDefinition]:
    key = dg.AssetKey([group, "training_data"])

    @dg.asset(
        key=key,
        group_name=group_name(group),
        description=f"Car listings of model group {group}: the rows that match the schema.",
        kinds={"pandas"},
        check_specs=[
            dg.AssetCheckSpec(
                "schema_and_size",
                asset=key,
                blocking=True,
                description=f"At least {MIN_ROWS} valid rows and at most {MAX_REJECTED_FRACTION:.0%} rejected.",
            )
        ],
    )
    def training_data(context: dg.AssetExecutionContext, training_source: TrainingDataSource) -> Iterator:
        raw = training_source.load(group)
        checked = validate_training_frame(raw, group)
        if checked.rejected:
            context.log.warning(f"{checked.rejected} of {len(raw)} rows violate the schema: {checked.reasons}")
        yield dg.Output(
            checked.frame,
            metadata={
                "source": training_source.describe(group),
                "rows_read": len(raw),
                "rows": dg.MetadataValue.int(len(checked.frame)),
                "rows_rejected": dg.MetadataValue.int(checked.rejected),
                "rejection_reasons": dg.MetadataValue.json(checked.reasons),
                "rejected_examples": dg.MetadataValue.json(checked.examples),
                "data_hash": frame_hash(checked.frame),
                "preview": dg.MetadataValue.md("```\n" + checked.frame.head(5).to_string(index=False) + "\n```"),
            },
        )
        rejected_fraction = checked.rejected / len(raw) if len(raw) else 1.0
        passed = len(checked.frame) >= MIN_ROWS and rejected_fraction <= MAX_REJECTED_FRACTION
        yield dg.AssetCheckResult(
            check_name="schema_and_size",
            passed=passed,
            metadata={"rows": len(checked.frame), "rejected_fraction": round(rejected_fraction, 4)},
            description=None
            if passed
            else (
                f"{len(checked.frame)} valid rows (need {MIN_ROWS}), {rejected_fraction:.1%} rejected "
                f"(allowed {MAX_REJECTED_FRACTION:.0%})"
            ),
        )

    return [training_data]
