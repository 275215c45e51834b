"""The local adapter's prompt layout: the same programs answering the same queries with two layouts.

DSPy's JSONAdapter ends the last user message, after the query, with a reminder of the output
fields and their allowed values ("Respond with a JSON object in the following order of fields:
`agent` (must be formatted as a valid Python Literal[...])"). The local server constrains the answer
to the signature's JSON schema, so where every output field is a Literal or a bool the reminder
lists nothing the grammar does not enforce; the system message states the same. After the query,
it is the one constant part of the prompt that the server's prompt cache cannot reuse: each
call evaluates it again (40–60 tokens). ``LlamaCppJSONAdapter``'s layouts:
``reminder_last`` (DSPy's), ``reminder_first`` (before the inputs, so cached), ``no_reminder``.

For each module, the unoptimized program and one with two class-medoid demos per label from the
corpus train split answer the 130 corpus eval queries (modality also the external holdout, evaluation
only) once per layout, the order alternating between programs. ``--queries train --sample N`` asks
instead a seeded random N of the corpus train queries that are not among those demos: queries no
earlier layout figure came from, for a confirmatory run of a choice made on the eval queries.
Prints each layout's accuracy, the paired difference (other − reference) with its 95 % bootstrap
interval and McNemar p, the share of identical answers, and p50/p95 seconds per call.

    .venv/bin/python bench/prompt_layout.py [--layouts reminder_last reminder_first] [--modules ...]
        [--limit N] [--queries eval|train --sample N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
from optimizers import (  # bench/optimizers.py, beside this script
    DEFAULT_HOLDOUT,
    EvalSet,
    answer_all,
    corpus_set,
    corpus_train_pool,
    eval_sets,
)

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.demos import class_medoid_demos
from cogniverse_assets.modules.registry import ROUTING_MODULES, get_module
from cogniverse_assets.scoring import paired_comparison
from cogniverse_resources import stack
from cogniverse_resources.lm import PROMPT_LAYOUTS, LanguageModelResource, LlamaCppJSONAdapter


def programs(spec) -> dict:  # noqa: ANN001 - a RoutingModuleSpec
    with_demos = spec.program()
    with_demos.demos = class_medoid_demos(spec, corpus_train_pool(spec), per_label=2)
    return {"unoptimized": spec.program(), "2 demos/label": with_demos}


def fresh_train_set(spec, demos: list, sample: int, seed: int) -> EvalSet:  # noqa: ANN001 - a RoutingModuleSpec
    """A seeded random ``sample`` of the corpus train queries, leaving out the demos' queries."""
    demo_queries = {demo.query for demo in demos}
    rows = [row for row in load_queries("train") if row["query"] not in demo_queries]
    return corpus_set(spec, "corpus train (fresh)", random.Random(seed).sample(rows, min(sample, len(rows))))


def seconds(latencies_ms: list[float], q: int) -> float:
    return round(float(np.percentile(latencies_ms, q)) / 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--layouts",
        nargs=2,
        default=["reminder_last", "reminder_first"],
        choices=PROMPT_LAYOUTS,
        help="the reference layout, then the one compared with it",
    )
    parser.add_argument("--modules", nargs="+", default=list(ROUTING_MODULES), choices=list(ROUTING_MODULES))
    parser.add_argument("--limit", type=int, default=None, help="first N queries of each set")
    parser.add_argument("--holdout", type=Path, default=DEFAULT_HOLDOUT)
    parser.add_argument(
        "--queries",
        choices=["eval", "train"],
        default="eval",
        help="eval: the corpus eval queries (and the holdout); train: fresh corpus train queries, no demos",
    )
    parser.add_argument("--sample", type=int, default=200, help="with --queries train: how many")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()
    reference, other = args.layouts

    rows = []
    with stack.private_lm_server(stack.run_dir() / f"bench-prompt-layout-{os.getpid()}"):
        lm = LanguageModelResource.from_env().student()
        flip = False
        for name in args.modules:
            spec = get_module(name)
            module_programs = programs(spec)
            if args.queries == "train":
                demos = module_programs["2 demos/label"].demos
                query_sets = [fresh_train_set(spec, demos, args.sample, args.sample_seed)]
            else:
                query_sets = eval_sets(spec, args.holdout, args.limit)
            for program_name, program in module_programs.items():
                order = [other, reference] if flip else [reference, other]
                flip = not flip
                for data in query_sets:
                    answers = {}
                    for layout in order:
                        started = time.perf_counter()
                        answers[layout] = answer_all(spec, program, lm, LlamaCppJSONAdapter(layout), data)
                        took = time.perf_counter() - started
                        print(f"{name} / {program_name} / {data.name} / {layout}: {took:.0f} s", flush=True)
                    correct = {layout: a.correct(data.accept) for layout, a in answers.items()}
                    same = [a == b for a, b in zip(answers[reference].labels, answers[other].labels)]
                    row = {
                        "module": name,
                        "program": program_name,
                        "eval_set": data.name,
                        "n": len(data.inputs),
                        "order": order,
                        "same_answers": round(float(np.mean(same)), 4),
                        "difference": paired_comparison(correct[other], correct[reference], level=0.95).figures(),
                        **{
                            layout: {
                                "accuracy": round(float(np.mean(correct[layout])), 4),
                                "p50_s": seconds(a.latencies_ms, 50),
                                "p95_s": seconds(a.latencies_ms, 95),
                                "lm_calls": a.lm_calls,
                            }
                            for layout, a in answers.items()
                        },
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)

    print(f"\n{other} against {reference}:")
    print("| module | program | set | n | accuracy | difference [95 %] | McNemar p | same answers | p50 s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d, ref, new = r["difference"], r[reference], r[other]
        print(
            f"| {r['module']} | {r['program']} | {r['eval_set']} | {r['n']} | {ref['accuracy']:.3f} → "
            f"{new['accuracy']:.3f} | {d['gain']:+.3f} [{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}] | "
            f"{d['mcnemar_p']:.2f} | {r['same_answers']:.0%} | {ref['p50_s']:.2f} → {new['p50_s']:.2f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
