"""Benchmark: a tenant's three lanes generating synthetic data with and without the copy verdict the
first lane stopped by a copying teacher leaves for the others.

Starts its own Phoenix and LM server (the local model as teacher, the bundled catalog as content)
and gives two tenants the same ``--traces`` requests with feedback at ``--feedback-rate`` on all three
modules, so each lane is in the hybrid range where the blending plan asks for synthetic examples and
both tenants send the teacher the same requests. Lane by lane (modality, cross_modal, routing), the
``told`` tenant runs its data stages as the product does; then the ``alone`` tenant runs the same
lane after its verdict file is deleted, which is what every lane did before the verdict was kept.
``alone`` goes second, so the LM server's prompt cache favours it, not the verdict.

Prints per lane the seconds of the synthetic stage, its LM calls (probes among them), the examples
kept and why it ended.

    .venv/bin/python bench/synthetic_copy_verdict.py [--traces 60] [--feedback-rate 0.5]
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
from cogniverse_assets.assets.synthetic_examples import synthetic_examples_assets, verdict_paths
from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets.traffic import emit_traffic

TENANTS = {"told": "bench-verdict-told", "alone": "bench-verdict-alone"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=60)
    parser.add_argument("--feedback-rate", type=float, default=0.5)
    args = parser.parse_args()

    rows = []
    with local_lane_stack("bench-verdict-") as (_, phoenix, instance, resources):
        artifacts = resources["artifacts"]
        for tenant in TENANTS.values():
            resources["config_store"].store().add(tenant)
            emit_traffic(phoenix, tenant, n=args.traces, feedback_rate=args.feedback_rate, seed=11, progress=False)
        instance.add_dynamic_partitions(tenants_partitions.name, list(TENANTS.values()))

        def run(module: str, arm: str) -> None:
            tenant = TENANTS[arm]
            if arm == "alone":
                for path in verdict_paths(artifacts, tenant):
                    path.unlink(missing_ok=True)
            index = list(ROUTING_MODULES).index(module)
            synthetic = synthetic_examples_assets[index]
            started = time.perf_counter()
            lane = [routing_traces_assets[index], synthetic]
            result = dg.materialize(lane, partition_key=tenant, instance=instance, resources=resources)
            seconds = time.perf_counter() - started
            figures = materialized_figures(result, synthetic)
            ending = "stopped" if figures.get("stopped") else figures["reason"]
            told = figures.get("teacher_copied_in") or "-"
            rows.append(
                (
                    module,
                    arm,
                    told,
                    figures.get("generation_seconds", 0.0),
                    figures["lm_calls"],
                    figures.get("copy_probes", 0),
                    figures["generated"],
                    seconds,
                    f"{ending}; rejected {figures.get('rejected')}",
                )
            )
            print(rows[-1], flush=True)

        for module in ROUTING_MODULES:
            for arm in TENANTS:
                run(module, arm)

    print(f"\nsynthetic stage, {os.cpu_count()} cores, the local LM as teacher, the bundled catalog")
    print("| module | arm | told by | generation s | LM calls | of them probes | kept | stages s | how it ended |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [f"{cell:.1f}" if isinstance(cell, float) else str(cell) for cell in row]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
