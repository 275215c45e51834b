"""``<module>/trained_module``: the module compiled with the planned optimizer.

Reads the plan and the training set's *train* split (never its validation split); writes a new
module version as DSPy JSON through the module IO manager (every version kept, atomic). When the
plan says skip it produces nothing, so nothing downstream runs and nothing fails.
"""

from datetime import datetime, timezone

import dagster as dg

from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_assets.assets.lane import lane_asset
from cogniverse_assets.assets.optimization_plan import PLAN_FILE
from cogniverse_assets.assets.routing_traces import EXTERNAL_CALL_RETRY, tenant_config
from cogniverse_assets.assets.training_set import DEFAULT_INTERVAL, TRAINING_SET_TABLE
from cogniverse_assets.blending import stratified_pick
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec
from cogniverse_assets.optimizers import compile_module, program_summary, to_examples

SELECTION_FRACTION = 0.2  # of the train split, for optimizers that pick among candidates
OPTIMIZERS_WITH_SELECTION = ("mipro", "gepa")
# GEPA and MIPROv2 make hundreds of LM calls; on Kubernetes they get a bigger pod.
HEAVY_STEP_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}}}}


def build_trained_module(spec: RoutingModuleSpec) -> dg.AssetsDefinition:
    @lane_asset(
        spec, "trained_module", after=("optimization_plan", "training_set"),
        io_manager_key="dspy_module_io_manager",
        output_required=False,
        retry_policy=EXTERNAL_CALL_RETRY,
        op_tags=HEAVY_STEP_TAGS,
        kinds={"dspy"},
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=3 * DEFAULT_INTERVAL, warn_window=2 * DEFAULT_INTERVAL),
        description=f"Reads the `{spec.name}` plan and train split; writes a new DSPy JSON module version "
        "compiled with the planned optimizer (nothing when the plan says skip).",
    )
    def trained_module(context: dg.AssetExecutionContext, config_store: ConfigStoreResource, artifacts: ArtifactStore, lm: LanguageModelResource):
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
            picked = stratified_pick(train, max(5, round(len(train) * SELECTION_FRACTION)), seed=0)
            selection = to_examples(spec, picked)
            train = train.drop(index=picked.index)
        result = compile_module(
            spec, plan["optimizer"], to_examples(spec, train), lm.student(), lm.teacher(), lm.adapter(),
            max_iterations=config.max_training_iterations, valset=selection,
        )
        summary = program_summary(result.program)
        version = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{context.run.run_id[:8]}"
        payload = {
            "version": version,
            "tenant_id": config.tenant_id,
            "module": spec.name,
            "optimizer": result.optimizer,
            "parameters": result.parameters,
            "state": result.program.dump_state(),
            "train_size": len(train),
            "selection_size": len(selection or []),
            "lm_calls": result.lm_calls,
            "lm_tokens": result.lm_tokens,
            "wall_time_s": round(result.seconds, 2),
            "created_at": datetime.now(timezone.utc).isoformat(),
            "plan": {key: plan.get(key) for key in ("source", "reasons", "features", "training_fingerprint")},
            **summary,
        }
        yield dg.Output(payload, metadata={
            "optimizer": result.optimizer,
            "parameters": dg.MetadataValue.json(result.parameters),
            "demos": summary["demos"],
            "instructions": dg.MetadataValue.json(summary["instructions"]),
            "train_size": len(train),
            "lm_calls": result.lm_calls,
            "lm_tokens": result.lm_tokens,
            "wall_time_s": round(result.seconds, 2),
        })

    return trained_module


trained_module_assets = [build_trained_module(spec) for spec in ROUTING_MODULES.values()]
