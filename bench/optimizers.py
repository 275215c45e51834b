"""Benchmark: the four DSPy optimizers on the bundled modality train pool with the local LM.

Prints, per optimizer, accuracy on the corpus's held-out eval split (never seen by any optimizer),
LM calls and wall time, next to the unoptimized baseline. Starts its own local LM server.

    .venv/bin/python bench/optimizers.py [--train 60] [--eval 60] [--seeds 0] [--optimizers bootstrap mipro simba gepa]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import pandas as pd

from cogniverse_resources import stack
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_assets.blending import stratified_pick
from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.metrics import exact_match
from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.optimizers import OPTIMIZERS, LMUsage, compile_module, to_examples

SPEC = get_module("modality")


def evaluate(program, lm, adapter, examples) -> tuple[float, int]:
    metric = exact_match(SPEC)
    usage = LMUsage([lm])
    with dspy.context(lm=lm, adapter=adapter):
        correct = sum(bool(metric(example, program(**example.inputs()))) for example in examples)
    return correct / len(examples), usage.figures()["lm_calls"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--eval", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    parser.add_argument("--max-iterations", type=int, default=40, help="GEPA: max_metric_calls = 2 x this; SIMBA steps")
    args = parser.parse_args()

    model = stack.ensure_local_model()
    port = stack.free_port()
    service = stack.lm_service(port=port, directory=stack.run_dir() / "bench", model_path=model)
    service.start()
    os.environ["COGNIVERSE_LM_PORT"] = str(port)
    try:
        resource = LanguageModelResource.from_env()
        lm, adapter = resource.student(), resource.adapter()
        pool = pd.DataFrame(load_queries("train")).rename(columns={"modality": "label"})
        held_out = pd.DataFrame(load_queries("eval")).rename(columns={"modality": "label"})
        eval_set = to_examples(SPEC, stratified_pick(held_out, args.eval, seed=0))
        rows = []
        for seed in args.seeds:
            train_frame = stratified_pick(pool, args.train, seed=seed)
            selection = stratified_pick(train_frame, max(5, args.train // 5), seed=seed)
            train = to_examples(SPEC, train_frame.drop(index=selection.index))
            valset = to_examples(SPEC, selection)
            accuracy, calls = evaluate(SPEC.program(), lm, adapter, eval_set)
            rows.append({"seed": seed, "optimizer": "unoptimized", "accuracy": accuracy, "compile_calls": 0, "compile_s": 0.0})
            print(f"seed {seed} unoptimized: {accuracy:.3f} ({calls} eval calls)", flush=True)
            for name in args.optimizers:
                try:
                    result = compile_module(SPEC, name, train + (valset if name not in ("mipro", "gepa") else []), lm, lm, adapter,
                                            max_iterations=args.max_iterations, valset=valset, seed=seed)
                except Exception as error:  # a failing optimizer is a finding, not a crash of the bench
                    print(f"seed {seed} {name}: FAILED {type(error).__name__}: {error}", flush=True)
                    continue
                accuracy, _ = evaluate(result.program, lm, adapter, eval_set)
                # compile time only: the held-out evaluation after it is not part of the optimizer's cost
                rows.append({"seed": seed, "optimizer": name, "accuracy": accuracy, "compile_calls": result.lm_calls,
                             "compile_s": result.seconds})
                print(f"seed {seed} {name}: {accuracy:.3f} held-out, {result.lm_calls} LM calls, {result.seconds:.0f}s", flush=True)
    finally:
        service.stop()

    frame = pd.DataFrame(rows)
    print(f"\nmodality, train {args.train} (of which {max(5, args.train // 5)} for candidate selection), "
          f"held-out eval {args.eval}, seeds {args.seeds}, {os.cpu_count()} cores")
    print(f"{'optimizer':12s} {'accuracy':>16s} {'LM calls':>10s} {'compile s':>10s}")
    for name, group in frame.groupby("optimizer", sort=False):
        accs = group["accuracy"].tolist()
        spread = f" ± {statistics.stdev(accs):.3f}" if len(accs) > 1 else ""
        print(f"{name:12s} {statistics.mean(accs):>10.3f}{spread:>6s} {group['compile_calls'].mean():>10.0f} {group['compile_s'].mean():>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
