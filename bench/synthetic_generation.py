"""Synthetic generation with and without the copy probe, on the local teacher and the bundled catalog.

For each module and seed the same request (``--requests`` examples, as a cold-start lane asks) is
generated twice, each variant on a fresh LM server warmed by one unrelated call, so neither gains
from the other's prompt cache: first with the probe (the product's default), then without it.
Prints per run the seconds, LM calls (probes among them), rejections and whether generation
stopped, and whether both variants kept the same queries and rejected the same candidates.

    .venv/bin/python bench/synthetic_generation.py                      # 3 modules, seeds 0 1, 12 requests
    .venv/bin/python bench/synthetic_generation.py --modules modality --seeds 0 --requests 6
"""

from __future__ import annotations

import argparse
import os
import time

import dspy

from cogniverse_assets.modules.registry import ROUTING_MODULES, get_module
from cogniverse_assets.synthetic import COPY_PROBE_TOKENS, GenerationReport, SyntheticQueryGenerator
from cogniverse_resources import stack
from cogniverse_resources.content import CatalogContentBackend
from cogniverse_resources.lm import LanguageModelResource

VARIANTS = {"probe": COPY_PROBE_TOKENS, "no probe": None}


def run_variant(probe_tokens: int | None, modules: list[str], seeds: list[int], requests: int, model) -> dict:
    results = {}
    with stack.private_lm_server(stack.run_dir() / f"bench-synthetic-{probe_tokens}-{os.getpid()}", model):
        resource = LanguageModelResource.from_env()
        teacher, adapter = resource.teacher(), resource.adapter()
        with dspy.context(lm=teacher, adapter=adapter):
            dspy.Predict("question -> answer")(question="Say hello.")  # load the model's pages before timing
        for module in modules:
            for seed in seeds:
                generator = SyntheticQueryGenerator(
                    get_module(module),
                    CatalogContentBackend(),
                    teacher,
                    adapter,
                    seed=seed,
                    copy_probe_tokens=probe_tokens,
                )
                started = time.perf_counter()
                frame, report = generator.generate(requests)
                results[(module, seed)] = (time.perf_counter() - started, sorted(frame["query"]), report)
    return results


def describe(seconds: float, report: GenerationReport) -> str:
    stopped = "stopped" if report.stopped else "done"
    return (
        f"{seconds:6.1f} s  {report.lm_calls:3d} calls ({report.copy_probes:2d} probes)  "
        f"kept {report.accepted:2d}  rejected {dict(sorted(report.rejected.items()))}  {stopped}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", default=list(ROUTING_MODULES), choices=list(ROUTING_MODULES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--requests", type=int, default=12)
    args = parser.parse_args()
    model = stack.ensure_local_model()
    results = {
        name: run_variant(tokens, args.modules, args.seeds, args.requests, model) for name, tokens in VARIANTS.items()
    }
    totals = {name: 0.0 for name in VARIANTS}
    for key in results["probe"]:
        module, seed = key
        for name in VARIANTS:
            seconds, _, report = results[name][key]
            totals[name] += seconds
            print(f"{module:11s} seed {seed}  {name:8s}  {describe(seconds, report)}", flush=True)
        (_, kept_probe, probe), (_, kept_plain, plain) = results["probe"][key], results["no probe"][key]
        same = kept_probe == kept_plain and probe.rejected == plain.rejected
        print(f"{module:11s} seed {seed}  same kept queries and rejections: {'yes' if same else 'NO'}", flush=True)
    print(
        f"total: probe {totals['probe']:.1f} s, no probe {totals['no probe']:.1f} s "
        f"({totals['probe'] / totals['no probe']:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
