"""``<module>/trained_module``: the module compiled with the planned optimizer.

Reads the plan and the training set's *train* split (never its validation split); writes a new
module version as DSPy JSON through the module IO manager (every version kept, atomic), with the
distilled fast path (``fast_path.py``) beside it in the same version, so the gate promotes both as
one unit. When the plan says skip it produces nothing, so nothing downstream runs and nothing fails.
"""

from datetime import datetime, timezone

import dagster as dg

from cogniverse_assets.assets.lane import EXTERNAL_CALL_RETRY, lane_asset, tenant_config
from cogniverse_assets.assets.optimization_plan import PLAN_FILE
from cogniverse_assets.assets.training_set import TRAINING_SET_TABLE
from cogniverse_assets.blending import stratified_pick
from cogniverse_assets.fast_path import lm_accuracy_estimate, train_fast_path
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec
from cogniverse_assets.optimizers import compile_module, program_summary
from cogniverse_assets.records import ModuleVersion, PlanSummary
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.lm import LanguageModelResource

SELECTION_FRACTION = 0.2  # of the train split, for optimizers that pick among candidates
OPTIMIZERS_WITH_SELECTION = ("mipro", "gepa")
# GEPA and MIPROv2 make hundreds of LM calls; on Kubernetes they get a bigger pod.
HEAVY_STEP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}}
    }
}


def build_trained_module(spec: RoutingModuleSpec) -> dg.AssetsDefinition:
    @lane_asset(
        spec,
        "trained_module",
        after=("optimization_plan", "training_set"),
        io_manager_key="dspy_module_io_manager",
        output_required=False,
        retry_policy=EXTERNAL_CALL_RETRY,
        op_tags=HEAVY_STEP_TAGS,
        kinds={"dspy"},
        description=f"Reads the `{spec.name}` plan and train split; writes a new DSPy JSON module version "
        "compiled with the planned optimizer (nothing when the plan says skip).",
    )
    def trained_module(
        context: dg.AssetExecutionContext,
        config_store: ConfigStoreResource,
        artifacts: ArtifactStore,
        lm: LanguageModelResource,
    ):
        config = tenant_config(config_store, context.partition_key)
        plan = artifacts.read_json(artifacts.path(config.tenant_id, spec.name, PLAN_FILE))
        if plan is None:
            raise dg.Failure(f"no optimization plan for {config.tenant_id}/{spec.name}", allow_retries=False)
        if plan["decision"] != "train":
            context.log.info(f"plan says skip: {'; '.join(plan['reasons'])}")
            return
        table = artifacts.read_table(config.tenant_id, spec.name, TRAINING_SET_TABLE)
        train = table[table["split"] == "train"].reset_index(drop=True)
        selection = None
        if plan["optimizer"] in OPTIMIZERS_WITH_SELECTION:
            selection = stratified_pick(train, max(5, round(len(train) * SELECTION_FRACTION)), seed=0)
            train = train.drop(index=selection.index)
        result = compile_module(
            spec,
            plan["optimizer"],
            train,
            lm.student(),
            lm.teacher(),
            lm.adapter(spec.prompt_layout),
            max_iterations=config.max_training_iterations,
            selection=selection,
            max_class_recall_drop=config.promotion_max_class_recall_drop,
        )
        fast = train_fast_path(spec, train, lm_accuracy_estimate(plan["features"].get("deployed_accuracy")))
        summary = program_summary(result.program)
        version = ModuleVersion(
            version=f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{context.run.run_id[:8]}",
            tenant_id=config.tenant_id,
            module=spec.name,
            optimizer=result.optimizer,
            parameters=result.parameters,
            state=result.program.dump_state(),
            train_size=len(train),
            selection_size=0 if selection is None else len(selection),
            lm_calls=result.lm_calls,
            lm_tokens=result.lm_tokens,
            wall_time_s=round(result.seconds, 2),
            created_at=datetime.now(timezone.utc).isoformat(),
            plan=PlanSummary.model_validate(plan),
            fast_path=fast.fast_path.to_state() if fast.fast_path else None,
            fast_path_reason=fast.reason,
            prompt_layout=spec.prompt_layout,
            **summary,
        )
        yield dg.Output(
            version.model_dump(),
            metadata={
                "optimizer": result.optimizer,
                "parameters": dg.MetadataValue.json(result.parameters),
                "demos": summary["demos"],
                "instructions": dg.MetadataValue.json(summary["instructions"]),
                "train_size": len(train),
                "lm_calls": result.lm_calls,
                "lm_tokens": result.lm_tokens,
                "wall_time_s": round(result.seconds, 2),
                "fast_path": fast.reason,
                "prompt_layout": spec.prompt_layout,
            },
        )

    return trained_module


trained_module_assets = [build_trained_module(spec) for spec in ROUTING_MODULES.values()]
