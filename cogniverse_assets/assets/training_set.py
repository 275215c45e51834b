"""``<module>/training_set``: real and synthetic examples blended progressively, split into train
and a real-only validation set (see ``cogniverse_assets.blending`` for the rules).

Reads the example table and the synthetic table; writes the training set table (``split`` column,
and ``validation_source`` on every row: what the validation split is — "real" (human/LLM
annotations), "synthetic (...)" or "none (...)" — which the promotion decision needs).
"""

import dagster as dg
import pandas as pd

from cogniverse_assets.assets.lane import lane_asset, tenant_config
from cogniverse_assets.assets.synthetic_examples import SYNTHETIC_TABLE, labeled_real
from cogniverse_assets.blending import build_training_set
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec
from cogniverse_assets.synthetic import SYNTHETIC_COLUMNS
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import ConfigStoreResource

TRAINING_SET_TABLE = "training_set"
# router_label: what the deployed router answered in production (real evidence of the LM module's accuracy);
# with router_program_key (on the LM path) and its latency, the evaluation's answer for that program.
TRAINING_COLUMNS = [
    "query",
    "detected_modalities",
    "entities",
    "label",
    "provenance",
    "label_score",
    "span_id",
    "router_label",
    "router_program_key",
    "processing_time_ms",
]
# What the validation split of a table without the column is: unknown, so never promoted on.
UNKNOWN_VALIDATION_SOURCE = "unknown (training set written before validation_source was recorded)"


def validation_source_of(table: pd.DataFrame | None) -> str:
    """The stored training set's ``validation_source``; "none" for an empty table."""
    if table is None or not len(table):
        return "none (no training set)"
    if "validation_source" not in table:
        return UNKNOWN_VALIDATION_SOURCE
    return str(table["validation_source"].iloc[0])


def _counts(frame: pd.DataFrame, column: str) -> dict[str, int]:
    return {str(key): int(value) for key, value in frame[column].value_counts().items()} if len(frame) else {}


def build_training_set_asset(spec: RoutingModuleSpec) -> dg.AssetsDefinition:
    @lane_asset(
        spec,
        "training_set",
        after=("routing_traces", "synthetic_examples"),
        kinds={"parquet"},
        description=f"Reads the `{spec.name}` example and synthetic tables; writes the blended training "
        "set with a stratified, real-only validation split.",
    )
    def training_set(
        context: dg.AssetExecutionContext, config_store: ConfigStoreResource, artifacts: ArtifactStore
    ) -> dg.MaterializeResult:
        config = tenant_config(config_store, context.partition_key)
        real = labeled_real(artifacts, config.tenant_id, spec.name)
        synthetic = artifacts.read_table(config.tenant_id, spec.name, SYNTHETIC_TABLE)
        synthetic = synthetic if synthetic is not None else pd.DataFrame(columns=SYNTHETIC_COLUMNS)
        result = build_training_set(real, synthetic, config)
        table = pd.concat(
            [
                result.train.reindex(columns=TRAINING_COLUMNS).assign(split="train"),
                result.validation.reindex(columns=TRAINING_COLUMNS).assign(split="validation"),
            ],
            ignore_index=True,
        ).assign(validation_source=result.validation_source)
        path = artifacts.write_table(config.tenant_id, spec.name, TRAINING_SET_TABLE, table)
        return dg.MaterializeResult(
            metadata={
                "strategy": result.plan.strategy,
                "strategy_reason": result.plan.reason,
                "train_size": len(result.train),
                "validation_size": len(result.validation),
                "validation_source": result.validation_source,
                "synthetic_fraction": round(result.synthetic_fraction, 4),
                "configured_synthetic_ratio": config.synthetic_data_ratio,
                "train_labels": dg.MetadataValue.json(_counts(result.train, "label")),
                "validation_labels": dg.MetadataValue.json(_counts(result.validation, "label")),
                "train_provenance": dg.MetadataValue.json(_counts(result.train, "provenance")),
                "validation_provenance": dg.MetadataValue.json(_counts(result.validation, "provenance")),
                "notes": dg.MetadataValue.json(result.notes),
                "table": dg.MetadataValue.path(path),
            }
        )

    return training_set


training_set_assets = [build_training_set_asset(spec) for spec in ROUTING_MODULES.values()]
