"""Benchmark: the LM calls and seconds an evaluation costs with and without the answer memory.

Starts its own Phoenix and LM server, gives a tenant ``--traces`` labeled modality traces and
materializes the lane up to its training set. Then the modality evaluation (candidate against the
deployed module, here the unoptimized one) runs in three situations a tenant meets:

1. ``first``: a tenant's first evaluation; nothing is remembered.
2. ``new candidate``: a retrained lane on the same data; another candidate version, the same split.
3. ``more data``: ``--more`` new annotated traces, the training set rebuilt, another candidate.

Situations 2 and 3 are each evaluated twice on the same state, with the memory the earlier
evaluations left and with it cleared; the accuracies of both arms are printed beside the cost, as
a check that remembering changes the cost and nothing else. Candidates are class-medoid demos from
the tenant's own training split (1, 2, 3 per label), so each is another program.

With ``--served`` the traces are answered by the tenant's deployed (unoptimized) router on the
real LM, as in production, and only the first evaluation runs, three times on the same state with
nothing remembered: taking the answers the spans recorded under the deployed program's key, with
the key left out of the training set (as for traffic from a router that does not record it), and
taking them again (the first run in a process pays one-time costs the others do not).

    .venv/bin/python bench/evaluation_memory.py [--traces 60] [--more 30] [--served]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dagster as dg
from private_phoenix import local_lane_stack, materialized_figures

from cogniverse_assets.answer_memory import ANSWERS_FOLDER
from cogniverse_assets.assets.evaluation import evaluation_assets
from cogniverse_assets.assets.routing_traces import routing_traces_assets
from cogniverse_assets.assets.synthetic_examples import synthetic_examples_assets
from cogniverse_assets.assets.trained_module import trained_module_assets
from cogniverse_assets.assets.training_set import TRAINING_SET_TABLE, training_set_assets
from cogniverse_assets.modules.demos import class_medoid_demos
from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets.traffic import deployed_router_decider, emit_traffic
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.phoenix import PhoenixResource

TENANT = "bench-memory"
SPEC = get_module("modality")
DATA_STAGES = [routing_traces_assets[0], synthetic_examples_assets[0], training_set_assets[0]]


def store_candidate(artifacts: ArtifactStore, version: str, per_label: int) -> None:
    table = artifacts.read_table(TENANT, SPEC.name, TRAINING_SET_TABLE)
    program = SPEC.program()
    program.demos = class_medoid_demos(SPEC, table[table["split"] == "train"], per_label=per_label)
    payload = {
        "version": version,
        "tenant_id": TENANT,
        "module": SPEC.name,
        "optimizer": "labeled",
        "state": program.dump_state(),
        "lm_calls": 0,
        "wall_time_s": 0.0,
        "plan": {"features": {}},
        "created_at": datetime.now(timezone.utc).isoformat(),
        "prompt_layout": SPEC.prompt_layout,
    }
    artifacts.write_json(artifacts.path(TENANT, SPEC.name, "modules", f"{version}.json"), payload)
    artifacts.write_json(artifacts.path(TENANT, SPEC.name, "modules", "candidate.json"), {"version": version})


def measure(
    root: Path,
    phoenix: PhoenixResource,
    instance: dg.DagsterInstance,
    resources: dict,
    traces: int,
    more: int,
    served: bool = False,
) -> list:
    resources["config_store"].store().add(TENANT, use_synthetic_data=False)
    artifacts = resources["artifacts"]
    answers = Path(str(artifacts.path(TENANT, SPEC.name, ANSWERS_FOLDER)))
    instance.add_dynamic_partitions(tenants_partitions.name, [TENANT])
    rows = []

    def evaluate(situation: str, arm: str) -> None:
        started = time.perf_counter()
        result = dg.materialize(
            [trained_module_assets[0], evaluation_assets[0]],
            partition_key=TENANT,
            instance=instance,
            resources=resources,
            selection=[evaluation_assets[0].key],
            raise_on_error=False,  # a blocked promotion gate fails the run; the figures are written
        )
        seconds = time.perf_counter() - started
        figures = materialized_figures(result, evaluation_assets[0])
        rows.append(
            (
                situation,
                arm,
                figures["validation_size"],
                figures["lm_calls"],
                figures["remembered_answers"],
                figures["answers_taken_from_serving"],
                seconds,
                figures["candidate_accuracy"],
                figures["deployed_accuracy"],
            )
        )
        print(rows[-1], flush=True)

    def both_arms(situation: str) -> None:
        """With the memory the earlier evaluations left, then on the same state without any."""
        evaluate(situation, "with memory")
        after = root / "answers-after"
        shutil.copytree(answers, after)
        shutil.rmtree(answers)
        evaluate(situation, "without")
        shutil.rmtree(answers)
        shutil.move(after, answers)

    def add_traffic(n: int, seed: int) -> None:
        decide = (
            deployed_router_decider(TENANT, resources["lm"], resources["config_store"].store(), artifacts)
            if served
            else None
        )
        emit_traffic(
            phoenix, TENANT, n=n, feedback_rate=1.0, seed=seed, progress=False, modules=[SPEC.name], decide=decide
        )
        dg.materialize(DATA_STAGES, partition_key=TENANT, instance=instance, resources=resources)

    add_traffic(traces, seed=7)
    if served:
        # Taken, without, taken again: each from nothing remembered. The first evaluation in the
        # process also pays one-time costs (imports, the Phoenix dataset), which the third does not.
        store_candidate(artifacts, "c1", per_label=1)
        table = artifacts.read_table(TENANT, SPEC.name, TRAINING_SET_TABLE)
        for arm, keys in (("served answers taken", True), ("without", False), ("served answers taken", True)):
            stored = table if keys else table.assign(router_program_key=None)
            artifacts.write_table(TENANT, SPEC.name, TRAINING_SET_TABLE, stored)
            evaluate("first, traffic from the deployed router", arm)
            shutil.rmtree(answers)
        return rows
    store_candidate(artifacts, "c1", per_label=1)
    evaluate("first", "nothing remembered")
    store_candidate(artifacts, "c2", per_label=2)
    both_arms("new candidate")
    add_traffic(more, seed=8)
    store_candidate(artifacts, "c3", per_label=3)
    both_arms("more data")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=60)
    parser.add_argument("--more", type=int, default=30)
    parser.add_argument("--served", action="store_true", help="traces answered by the deployed router on the LM")
    args = parser.parse_args()

    with local_lane_stack("bench-memory-") as (root, phoenix, instance, resources):
        rows = measure(root, phoenix, instance, resources, args.traces, args.more, args.served)

    print(f"\nmodality evaluation, {os.cpu_count()} cores, the local LM")
    print(
        "| situation | arm | validation n | LM calls | remembered | taken from serving | seconds | candidate acc "
        "| deployed acc |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for situation, arm, n, calls, remembered, taken, seconds, candidate, deployed in rows:
        print(
            f"| {situation} | {arm} | {n} | {calls} | {remembered} | {taken} | {seconds:.1f} | {candidate:.3f} "
            f"| {deployed:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
