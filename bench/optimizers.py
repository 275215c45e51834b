"""Benchmark: optimizers (and the distilled fast path in front of them) on the local LM.

For each seed, a stratified training pool of ``--train`` examples is drawn from the corpus's train
split; every optimizer compiles on it (MIPROv2/GEPA select on a fifth of it), and every compiled
module answers all of the corpus's held-out eval queries and, for the modality module, the external
holdout (``../shared/holdout``: evaluation only, never seen by any optimizer or demo pool). Printed
per optimizer: accuracy, the paired difference to the unoptimized module with its 95 % bootstrap
interval and McNemar's exact p-value, compile seconds and LM calls, LM-path latency p50/p95; and
for the cascade (fast path, else the module): accuracy, fast-path coverage and fast-path latency.

    .venv/bin/python bench/optimizers.py [--module modality] [--train 130] [--seeds 0 1 2]
        [--optimizers knn labeled knn:8 labeled:3 mipro]
        [--holdout ../shared/holdout/external_routing_queries.jsonl] [--out FILE]

The unoptimized module does not depend on the seed; it is scored once and compared with every seed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import numpy as np
import pandas as pd

from cogniverse_assets.blending import stratified_pick
from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.fast_path import DEFAULT_LM_ACCURACY, FastPath, cascade_answers, train_fast_path
from cogniverse_assets.modules.demos import class_medoid_demos
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec, get_module
from cogniverse_assets.optimizers import DEMO_OPTIMIZERS, OPTIMIZERS, compile_module
from cogniverse_assets.scoring import (
    ProgramAnswers,
    answer_inputs,
    paired_comparison,
    promotion_decision,
    score_examples,
)
from cogniverse_resources import stack
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.paths import REPO_ROOT

DEFAULT_HOLDOUT = REPO_ROOT.parent / "shared" / "holdout" / "external_routing_queries.jsonl"
SELECTING = ("mipro", "gepa")


@dataclass
class EvalSet:
    name: str
    inputs: list[dict]
    accept: list[list[str]]


@dataclass
class Answers(ProgramAnswers):
    def correct(self, accept: list[list[str]]) -> list[bool]:
        return [label in ok for label, ok in zip(self.labels, accept)]


@dataclass
class Row:
    seed: int
    optimizer: str
    eval_set: str
    accuracy: float
    compile_s: float
    compile_lm_calls: int
    lm_p50_ms: float
    lm_p95_ms: float
    vs_unoptimized: dict = field(default_factory=dict)
    cascade: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)  # the product's promotion gate (defaults) on this set


def gate_note(gate: dict) -> str:
    return f"; gate {'passes' if gate['passes'] else 'blocks'}: {gate['reasons'][-1]}" if gate else ""


def gate_figures(spec: RoutingModuleSpec, data: EvalSet, answers: Answers, baseline: Answers) -> dict:
    """What ``promotion_decision`` (the tenant defaults) says of the candidate against the unoptimized
    module on ``data``; empty where a query accepts more than one label (no single gold for recall)."""
    if any(len(accept) != 1 for accept in data.accept):
        return {}
    gold = [accept[0] for accept in data.accept]
    candidate = score_examples(spec, gold, answers.labels, answers.latencies_ms, 0)
    deployed = score_examples(spec, gold, baseline.labels, baseline.latencies_ms, 0)
    passes, reasons, figures = promotion_decision(candidate, deployed)
    return {"passes": passes, "reasons": reasons, "class_recall_drops": figures["class_recall_drops"]}


def corpus_train_pool(spec: RoutingModuleSpec) -> pd.DataFrame:
    """The corpus train split as the module's gold-labeled training rows (``label``, human provenance)."""
    return (
        pd.DataFrame(load_queries("train")).rename(columns={spec.corpus_label_key: "label"}).assign(provenance="human")
    )


def corpus_set(spec: RoutingModuleSpec, name: str, rows: list[dict]) -> EvalSet:
    """Corpus rows as an evaluation set: the module's inputs, its gold label the one accepted answer."""
    return EvalSet(name, [spec.inputs(r) for r in rows], [[str(r[spec.corpus_label_key])] for r in rows])


def eval_sets(spec: RoutingModuleSpec, holdout: Path | None, limit: int | None) -> list[EvalSet]:
    sets = [corpus_set(spec, "corpus eval", load_queries("eval")[:limit])]
    if spec.name == "modality" and holdout is not None and holdout.exists():
        rows = [json.loads(line) for line in holdout.read_text().splitlines() if line.strip()][:limit]
        sets.append(EvalSet("external holdout", [spec.inputs(r) for r in rows], [list(r["accept"]) for r in rows]))
    return sets


def answer_all(
    spec: RoutingModuleSpec, program: dspy.Module, lm: dspy.LM, adapter: dspy.Adapter, data: EvalSet
) -> Answers:
    """Every query of ``data`` answered as the product's evaluation answers (no remembered answers)."""
    answers = answer_inputs(spec, program, data.inputs, lm, adapter)
    return Answers(answers.labels, answers.latencies_ms, answers.lm_calls)


def cascade_figures(fast_path: FastPath | None, data: EvalSet, answers: Answers, baseline: Answers) -> dict:
    if fast_path is None:
        return {}
    fast_ms = []
    for inputs in data.inputs:
        started = time.perf_counter()
        fast_path.predict(inputs)
        fast_ms.append((time.perf_counter() - started) * 1000)
    labels, paths = cascade_answers(fast_path, data.inputs, answers.labels)
    correct = [label in ok for label, ok in zip(labels, data.accept)]
    fast = [ms for ms, path in zip(fast_ms, paths) if path == "fast"]
    module_correct = answers.correct(data.accept)
    return {
        "accuracy": float(np.mean(correct)),
        "coverage": paths.count("fast") / len(paths),
        "fast_accuracy": float(np.mean([c for c, p in zip(correct, paths) if p == "fast"])) if fast else None,
        "fast_p50_ms": float(np.percentile(fast, 50)) if fast else None,
        "fast_p95_ms": float(np.percentile(fast, 95)) if fast else None,
        "vs_module": paired_comparison(correct, module_correct, level=0.95).figures(),
        "vs_unoptimized": paired_comparison(correct, baseline.correct(data.accept), level=0.95).figures(),
    }


def optimizer_variant(name: str) -> str:
    optimizer, _, size = name.partition(":")
    sized = not size or (optimizer in DEMO_OPTIMIZERS and size.isdigit() and int(size) >= 1)
    if optimizer not in OPTIMIZERS or not sized:
        raise argparse.ArgumentTypeError(f"{name!r}: use one of {', '.join(OPTIMIZERS)}, knn:K or labeled:N")
    return name


def table_row(name: str, group: list[Row]) -> str:
    def mean(values) -> float:
        values = [value for value in values if value is not None]
        return statistics.mean(values) if values else float("nan")

    compared = [row.vs_unoptimized for row in group if row.vs_unoptimized]
    cascade = [row.cascade for row in group if row.cascade]
    cells = [
        name,
        " / ".join(f"{row.accuracy:.3f}" for row in group),
        f"{mean(c['gain'] for c in compared):+.3f}" if compared else "-",
        " ".join(f"[{c['interval'][0]:+.3f}, {c['interval'][1]:+.3f}]" for c in compared) or "-",
        " / ".join(f"{c['mcnemar_p']:.3f}" for c in compared) or "-",
        f"{mean(row.compile_s for row in group):.1f}",
        f"{mean(row.compile_lm_calls for row in group):.0f}",
        f"{mean(row.lm_p50_ms for row in group):.0f}/{mean(row.lm_p95_ms for row in group):.0f}",
        " / ".join(f"{c['accuracy']:.3f}" for c in cascade) or "-",
        f"{mean(c['coverage'] for c in cascade):.0%}" if cascade else "-",
        f"{mean(c['fast_p50_ms'] for c in cascade):.2f}" if cascade else "-",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="modality", choices=list(ROUTING_MODULES))
    parser.add_argument("--train", type=int, default=130, help="training pool size drawn from the corpus train split")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--optimizers",
        nargs="+",
        default=["knn", "labeled"],
        type=optimizer_variant,
        help=f"any of {', '.join(OPTIMIZERS)}; knn:K retrieves K demos, labeled:N keeps N demos per label",
    )
    parser.add_argument("--holdout", type=Path, default=DEFAULT_HOLDOUT, help="external holdout (modality only)")
    parser.add_argument(
        "--limit", type=int, default=None, help="score only the first N queries of each set (smoke runs)"
    )
    parser.add_argument("--max-iterations", type=int, default=40, help="GEPA: max_metric_calls = 2 x this; SIMBA steps")
    parser.add_argument("--out", type=Path, default=None, help="write every row as JSON here")
    args = parser.parse_args()
    spec = get_module(args.module)

    rows: list[Row] = []
    with stack.private_lm_server(stack.run_dir() / f"bench-optimizers-{os.getpid()}"):
        resource = LanguageModelResource.from_env()
        lm, adapter = resource.student(), resource.adapter(spec.prompt_layout)  # the layout the product serves
        pool = corpus_train_pool(spec)
        sets = eval_sets(spec, args.holdout, args.limit)
        baseline = {data.name: answer_all(spec, spec.program(), lm, adapter, data) for data in sets}
        for data in sets:
            answers = baseline[data.name]
            rows.append(
                Row(
                    -1,
                    "unoptimized",
                    data.name,
                    float(np.mean(answers.correct(data.accept))),
                    0.0,
                    0,
                    float(np.percentile(answers.latencies_ms, 50)),
                    float(np.percentile(answers.latencies_ms, 95)),
                )
            )
            print(f"unoptimized {data.name}: {rows[-1].accuracy:.3f} ({len(data.inputs)} queries)", flush=True)
        for seed in args.seeds:
            train = stratified_pick(pool, args.train, seed=seed)
            fast = train_fast_path(spec, train, DEFAULT_LM_ACCURACY, seed=seed)
            print(f"seed {seed}: {fast.reason}", flush=True)
            for name in args.optimizers:
                optimizer, _, size = name.partition(":")
                selection = (
                    stratified_pick(train, max(5, len(train) // 5), seed=seed) if optimizer in SELECTING else None
                )
                fit = train.drop(index=selection.index) if selection is not None else train
                try:
                    result = compile_module(
                        spec,
                        optimizer,
                        fit,
                        lm,
                        lm,
                        adapter,
                        max_iterations=args.max_iterations,
                        selection=selection,
                        seed=seed,
                    )
                except Exception as error:  # a failing optimizer is a finding, not a crash of the bench
                    print(f"seed {seed} {name}: FAILED {type(error).__name__}: {error}", flush=True)
                    continue
                if size and optimizer == "knn":
                    result.program.k = int(size)
                elif size:
                    result.program.demos = class_medoid_demos(spec, fit, per_label=int(size))
                for data in sets:
                    answers = answer_all(spec, result.program, lm, adapter, data)
                    correct = answers.correct(data.accept)
                    row = Row(
                        seed,
                        name,
                        data.name,
                        float(np.mean(correct)),
                        round(result.seconds, 2),
                        result.lm_calls,
                        float(np.percentile(answers.latencies_ms, 50)),
                        float(np.percentile(answers.latencies_ms, 95)),
                        paired_comparison(correct, baseline[data.name].correct(data.accept), level=0.95).figures(),
                        cascade_figures(fast.fast_path, data, answers, baseline[data.name]),
                        gate_figures(spec, data, answers, baseline[data.name]),
                    )
                    rows.append(row)
                    ci = row.vs_unoptimized["interval"]
                    print(
                        f"seed {seed} {name} {data.name}: {row.accuracy:.3f} ({row.vs_unoptimized['gain']:+.3f} "
                        f"[{ci[0]:+.3f}, {ci[1]:+.3f}], p={row.vs_unoptimized['mcnemar_p']:.3f}); "
                        f"compile {result.seconds:.1f}s / {result.lm_calls} calls; LM p50 {row.lm_p50_ms:.0f} ms"
                        + (
                            f"; cascade {row.cascade['accuracy']:.3f} at {row.cascade['coverage']:.0%} fast"
                            if row.cascade
                            else ""
                        )
                        + gate_note(row.gate)
                        + (f"; shrunk {result.parameters.get('shrunk_to_gate')}" if optimizer == "calibrated" else ""),
                        flush=True,
                    )

    if args.out:
        args.out.write_text(json.dumps([asdict(row) for row in rows], indent=1))
    print(
        f"\n{spec.name}: train pool {args.train}, seeds {args.seeds}, {os.cpu_count()} cores; "
        "gain = paired difference to unoptimized, 95 % bootstrap interval, McNemar p"
    )
    for data in sets:
        print(f"\n{data.name} ({len(data.inputs)} queries)")
        print(
            "| optimizer | accuracy (seeds) | mean gain | 95 % intervals | McNemar p | compile s | LM calls "
            "| LM p50/p95 ms | cascade accuracy | fast share | fast p50 ms |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for name in ["unoptimized", *args.optimizers]:
            group = [row for row in rows if row.optimizer == name and row.eval_set == data.name]
            if group:
                print(table_row(name, group))
    return 0


if __name__ == "__main__":
    sys.exit(main())
