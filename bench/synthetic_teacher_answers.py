"""Benchmark: the synthetic stage of a lane's later runs with and without the teacher's answers of
the run before.

Starts its own Phoenix and LM server (the local model as teacher, the bundled catalog as content)
and gives a tenant ``--traces`` requests with feedback at ``--feedback-rate`` on all three modules,
so each lane is in the hybrid range where the blending plan asks for synthetic examples. Per module:

1. ``first``: the lane's data stages (traces, synthetic examples) as its first run materializes them.
2. ``later run``: ``--more`` new requests with feedback, then the same stages again, twice on the same
   state: with the answers the first run left, and with them deleted (what every later run cost
   before they were kept).

Prints per run the seconds of the synthetic stage, its LM calls and remembered answers, the examples
kept and why it ended; the two arms of a later run should end the same way.

    .venv/bin/python bench/synthetic_teacher_answers.py [--traces 60] [--more 20] [--feedback-rate 0.5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dagster as dg
from private_phoenix import local_lane_stack, materialized_figures

from cogniverse_assets.assets.routing_traces import routing_traces_assets
from cogniverse_assets.assets.synthetic_examples import TEACHER_ANSWERS_FILE, synthetic_examples_assets
from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets.traffic import emit_traffic

TENANT = "bench-teacher"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=60)
    parser.add_argument("--more", type=int, default=20)
    parser.add_argument("--feedback-rate", type=float, default=0.5)
    args = parser.parse_args()

    rows = []
    with local_lane_stack("bench-teacher-") as (_, phoenix, instance, resources):
        resources["config_store"].store().add(TENANT)
        artifacts = resources["artifacts"]
        instance.add_dynamic_partitions(tenants_partitions.name, [TENANT])

        def run(module: str, situation: str, arm: str) -> None:
            index = list(ROUTING_MODULES).index(module)
            synthetic = synthetic_examples_assets[index]
            started = time.perf_counter()
            result = dg.materialize(
                [routing_traces_assets[index], synthetic],
                partition_key=TENANT,
                instance=instance,
                resources=resources,
            )
            seconds = time.perf_counter() - started
            figures = materialized_figures(result, synthetic)
            synthetic_seconds = figures.get("generation_seconds", 0.0)
            ending = "stopped" if figures.get("stopped") else figures["reason"]
            ended = f"{ending}; rejected {figures.get('rejected')}"
            remembered = figures.get("remembered_answers", 0)
            row = (module, situation, arm, synthetic_seconds, figures["lm_calls"], remembered, figures["generated"])
            rows.append((*row, seconds, ended))
            print(rows[-1], flush=True)

        def traffic(n: int, seed: int) -> None:
            emit_traffic(phoenix, TENANT, n=n, feedback_rate=args.feedback_rate, seed=seed, progress=False)

        traffic(args.traces, seed=11)
        for module in ROUTING_MODULES:
            run(module, "first", "-")
        traffic(args.more, seed=12)
        for module in ROUTING_MODULES:
            run(module, "later run", "with the answers")
            answers = artifacts.path(TENANT, module, TEACHER_ANSWERS_FILE)
            if answers.exists():
                answers.unlink()
                run(module, "later run", "answers deleted")

    print(f"\nsynthetic stage, {os.cpu_count()} cores, the local LM as teacher, the bundled catalog")
    print("| module | run | arm | generation s | LM calls | remembered | kept | stages s | how it ended |")
    print("|---|---|---|---|---|---|---|---|---|")
    for module, situation, arm, synthetic_seconds, calls, remembered, kept, seconds, ended in rows:
        print(
            f"| {module} | {situation} | {arm} | {synthetic_seconds:.1f} | {calls} | {remembered} | {kept} | "
            f"{seconds:.1f} | {ended} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
