"""Benchmark: a lane run when nothing is new — wall time and LM calls.

Starts its own Phoenix, gives a tenant 45 labeled modality traces, materializes the lane up to its
plan, and records a module version as trained on exactly that training set. Then it runs the
whole modality lane (7 stages, in process) again with nothing new, ``--repeat`` times. The LM
resource points at a port where nothing listens, so any LM call would fail the run: a successful
run made 0 LM calls.

    .venv/bin/python bench/noop_run.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dagster as dg
from private_phoenix import lane_resources, private_phoenix

from cogniverse_assets.assets.deployment import deployment_assets
from cogniverse_assets.assets.evaluation import evaluation_assets
from cogniverse_assets.assets.optimization_plan import PLAN_FILE, optimization_plan_assets
from cogniverse_assets.assets.routing_traces import routing_traces_assets
from cogniverse_assets.assets.synthetic_examples import synthetic_examples_assets
from cogniverse_assets.assets.trained_module import trained_module_assets
from cogniverse_assets.assets.training_set import training_set_assets
from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets.traffic import emit_traffic
from cogniverse_resources import stack
from cogniverse_resources.lm import LanguageModelResource

TENANT = "bench-noop"
LANE = [
    group[0]
    for group in (
        routing_traces_assets,
        synthetic_examples_assets,
        training_set_assets,
        optimization_plan_assets,
        trained_module_assets,
        evaluation_assets,
        deployment_assets,
    )
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with private_phoenix("bench-noop-") as (root, phoenix):
        dead_lm = LanguageModelResource.from_env(
            student_api_base=f"http://127.0.0.1:{stack.free_port()}/v1", num_retries=0
        )
        resources = lane_resources(root, phoenix, dead_lm)
        resources["config_store"].store().add(TENANT, use_synthetic_data=False)
        artifacts = resources["artifacts"]
        emit_traffic(phoenix, TENANT, n=45, feedback_rate=1.0, seed=5, progress=False, modules=["modality"])
        (root / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            instance.add_dynamic_partitions(tenants_partitions.name, [TENANT])
            dg.materialize(LANE[:4], partition_key=TENANT, instance=instance, resources=resources)
            plan = artifacts.read_json(artifacts.path(TENANT, "modality", PLAN_FILE))
            # The state after a training on exactly this data.
            version = {
                "version": "trained",
                "state": get_module("modality").program().dump_state(),
                "plan": {"training_fingerprint": plan["training_fingerprint"]},
            }
            artifacts.write_json(artifacts.path(TENANT, "modality", "modules", "trained.json"), version)
            artifacts.write_json(
                artifacts.path(TENANT, "modality", "modules", "candidate.json"), {"version": "trained"}
            )
            seconds = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                result = dg.materialize(LANE, partition_key=TENANT, instance=instance, resources=resources)
                seconds.append(time.perf_counter() - started)
                assert result.success
            plan = artifacts.read_json(artifacts.path(TENANT, "modality", PLAN_FILE))
            materialized = sorted(
                {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
            )

    print(f"\nno-op modality lane run (in process), {args.repeat} runs, {os.cpu_count()} cores")
    print(f"plan: {plan['decision']} ({plan['reasons'][0]})")
    print(f"materialized: {', '.join(materialized)}")
    print(
        f"wall time: mean {statistics.mean(seconds):.2f}s, min {min(seconds):.2f}s, "
        f"max {max(seconds):.2f}s (goal < 2 s)"
    )
    print("LM calls: 0 (the LM endpoint is dead and every run succeeded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
