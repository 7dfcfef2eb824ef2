"""Stage 5: the served model: a new signed version in the model store, promoted atomically."""

from importlib.metadata import version as package_version

import dagster as dg
import onnx

from aimq_pipelines.models.groups import group_name
from aimq_pipelines.models.onnx_export import BeyondDeployedRuntime, check_redisai_compatible
from aimq_pipelines.models.promotion import judge
from aimq_pipelines.models.resources import ModelStoreResource
from aimq_pipelines.models.training import TrainedModel
from aimq_serving import redisai
from aimq_serving.drift_profile import DriftProfile


def build_served_model(group: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=[group, "served_model"],
        ins={
            "onnx_model": dg.AssetIn([group, "onnx_model"]),
            "trained_model": dg.AssetIn([group, "trained_model"]),
            "drift_profile": dg.AssetIn([group, "drift_profile"]),
        },
        deps=[dg.AssetKey([group, "training_data"])],
        group_name=group_name(group),
        description=(
            "Writes ONNX, signed pickle, spec, calibration, reference, drift profile, metrics, lineage as a new "
            "version; promotes it."
        ),
        kinds={"redis"},
        retry_policy=dg.RetryPolicy(
            max_retries=3, delay=1, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
        ),
    )
    def served_model(
        context: dg.AssetExecutionContext,
        model_store: ModelStoreResource,
        onnx_model: bytes,
        trained_model: TrainedModel,
        drift_profile: DriftProfile,
    ) -> dg.Output[dict]:
        try:
            # Checked here too, not only at export: whatever reaches the store must load in the deployed
            # runtime, and RedisAI is not there to refuse it where the backend is onnxruntime.
            check_redisai_compatible(onnx.load_from_string(onnx_model))
        except BeyondDeployedRuntime as exc:
            raise dg.Failure(description=f"group {group}: not stored: {exc}", allow_retries=False) from None
        store = model_store.store()
        # Judged again here, not only by the champion_challenger check: this asset can be materialized
        # alone from the UI (outside any run with the check), and a rollback may have changed the
        # served version since the check ran.
        verdict = judge(trained_model, store, group, model_store.settings().promotion_margin)
        if not verdict.passed:
            raise dg.Failure(
                description=f"group {group}: not stored: {verdict.reason}",
                metadata=verdict.metadata(),
                allow_retries=False,
            )
        data_event = context.instance.get_latest_materialization_event(dg.AssetKey([group, "training_data"]))
        data_meta = data_event.asset_materialization.metadata if data_event and data_event.asset_materialization else {}
        lineage = {
            "dagster_run_id": context.run_id,
            "data_hash": data_meta["data_hash"].value if "data_hash" in data_meta else None,
            "data_source": data_meta["source"].value if "source" in data_meta else None,
            "spec_version": trained_model.spec.version,
            "sklearn_version": package_version("scikit-learn"),
            "estimator": type(trained_model.model).__name__,
        }
        try:
            version = store.put(
                group,
                onnx_model,
                trained_model.model,
                trained_model.spec,
                trained_model.metrics,
                lineage,
                calibration=trained_model.calibration,
                reference=trained_model.reference,
                profile=drift_profile,
            )
        except (redisai.ModelRefused, redisai.WrongDatabase) as exc:
            # Not transient: storing the same model again is refused again, so no retry. Nothing was
            # written and nothing promoted: the current version stays served.
            raise dg.Failure(description=f"group {group}: {exc}", allow_retries=False) from None
        store.promote(group, version)
        pruned = store.prune(group)
        info = store.info(group, version, version)
        context.log.info(f"group {group}: version {version} is current (pruned {pruned or 'none'})")
        return dg.Output(
            {"group": group, "version": version},
            metadata={
                "version": version,
                "store_prefix": store.prefix,
                "redisai": info.redisai,
                "pruned_versions": dg.MetadataValue.json(pruned),
                "lineage": dg.MetadataValue.json(lineage),
                "promoted_because": verdict.reason,
            },
        )

    return served_model
