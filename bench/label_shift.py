"""Benchmark: `calibrated`'s bias when the traffic's label mix is not the labels' mix, and the mix
estimated from the deployed router's recorded answers on unlabeled traffic.

`calibrated` fits a per-label bias on a tenant's gold labels, so its answers assume the labels' mix.
Annotators rarely label a random sample of traffic, and the external holdout (86 % video) is where
the bias lost up to 0.085 (docs/benchmarks.md, "Label scores with a per-label bias"). The holdout
cannot say whether knowing the traffic's mix helps: using its queries to estimate a mix would tune on
it. This bench asks the question on the corpus alone, under label shift made on purpose:

- labeled: the seed's stratified 130 training examples; the bias is fitted on a stratified 50 of
  them, as `calibrated` fits it; the deployed router is the unoptimized module (a tenant's first
  lane) and its answers to the 130 are what their spans record.
- traffic: ``--traffic`` unlabeled spans drawn, with the target mix, from the other 260 corpus train
  queries; only the deployed router's answers to them are read (what every span records: 0 LM
  calls at compile).
- the traffic's mix is estimated by black-box shift estimation (Lipton et al., 2018): the router's
  answer distribution on traffic, q = C p, with C = P(answer | gold) from the labeled spans, solved
  for p >= 0 summing to 1. The `adapted` variant adds log(p / p_fit) to the bias (Saerens et al.,
  2002: the posterior under another prior). `oracle mix` adds the true mix instead: the ceiling.
  `adapted if shifted` adapts only where the router's answers on traffic and on the labeled spans
  differ by a chi-square test of homogeneity at p < ``SHIFT_P`` (its second run; see docs).
  `shrunk to the gate` is what `calibrated` serves since: the bias times the largest factor that
  keeps every label's recall on the fit examples within the gate's class-recall drop.
- scored on the 130 corpus eval queries weighted to the target mix (accuracy = sum over labels of
  mix × recall), with a 95 % interval of the paired difference resampled within each label.

Target mixes, fixed before any run: uniform (traffic like the labels), and each label at 0.6 and at
0.85 with the rest shared equally. Every module with one output field can be run.

    .venv/bin/python bench/label_shift.py [--module modality|routing] [--seeds 0 1 2] [--traffic 200]
        [--cache FILE.npz]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np
import pandas as pd
from scipy.optimize import nnls
from scipy.stats import chi2_contingency

from cogniverse_assets.blending import stratified_pick
from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.calibrated import answer_prefix, can_calibrate, fit_bias, shrink_to_gate
from cogniverse_assets.modules.registry import ROUTING_MODULES, get_module
from cogniverse_assets.scoring import DEFAULT_MAX_CLASS_RECALL_DROP
from cogniverse_resources import stack
from cogniverse_resources.label_scorer import LocalLabelScorer
from cogniverse_resources.lm import LlamaCppJSONAdapter

sys.path.insert(0, str(Path(__file__).parent))
from optimizers import corpus_train_pool  # noqa: E402 - the sibling bench's data

LABELED = 130
FIT = 50
SHIFTS = (0.6, 0.85)
MIX_FLOOR = 0.01  # an estimated share below this counts as this (log 0 would forbid the label)
SHIFT_P = 0.01
GATE_MAX_RECALL_DROP = DEFAULT_MAX_CLASS_RECALL_DROP
BOOTSTRAP = 2000


def target_mixes(labels: tuple[str, ...]) -> dict[str, np.ndarray]:
    mixes = {"uniform": np.full(len(labels), 1 / len(labels))}
    for share in SHIFTS:
        for index, label in enumerate(labels):
            mix = np.full(len(labels), (1 - share) / (len(labels) - 1))
            mix[index] = share
            mixes[f"{label} {share:.2f}"] = mix
    return mixes


def estimated_mix(confusion: np.ndarray, answered: np.ndarray) -> np.ndarray:
    """p >= 0, sum 1, minimizing |C p - q| (the sum held by a heavily weighted extra row)."""
    weight = 100.0
    system = np.vstack([confusion, weight * np.ones(confusion.shape[1])])
    target = np.concatenate([answered, [weight]])
    mix, _ = nnls(system, target)
    return mix / mix.sum()


def shift_p_value(labeled_answers: np.ndarray, traffic_answers: np.ndarray, labels: int) -> float:
    """Chi-square test of homogeneity: do the router's answers on traffic and on the labeled spans
    come from one distribution (as they do when traffic has the labels' mix)?"""
    table = np.array([np.bincount(labeled_answers, minlength=labels), np.bincount(traffic_answers, minlength=labels)])
    table = table[:, table.sum(axis=0) > 0]
    return float(chi2_contingency(table).pvalue) if table.shape[1] > 1 else 1.0


def weighted_comparison(
    candidate: np.ndarray, baseline: np.ndarray, gold: np.ndarray, mix: np.ndarray, seed: int
) -> tuple[float, float, float, float]:
    """(candidate accuracy, gain, low, high) under ``mix``: sum over labels of mix × recall, the
    interval from resampling the queries within each label."""
    rng = np.random.default_rng(seed)
    by_label = [np.flatnonzero(gold == index) for index in range(len(mix))]

    def accuracy(correct: np.ndarray, picks: list[np.ndarray]) -> float:
        return float(sum(share * correct[rows].mean() for share, rows in zip(mix, picks) if len(rows)))

    gains = []
    for _ in range(BOOTSTRAP):
        picks = [rng.choice(rows, size=len(rows)) for rows in by_label]
        gains.append(accuracy(candidate, picks) - accuracy(baseline, picks))
    low, high = np.percentile(gains, [2.5, 97.5])
    return accuracy(candidate, by_label), accuracy(candidate, by_label) - accuracy(baseline, by_label), low, high


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="modality", choices=list(ROUTING_MODULES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--traffic", type=int, default=200, help="unlabeled traffic spans per mix")
    parser.add_argument("--cache", type=Path, default=None, help="keep the label scores here (.npz) for a rerun")
    args = parser.parse_args()
    spec = get_module(args.module)
    if not can_calibrate(spec):
        raise SystemExit(f"{spec.name}: only modules with one label field are scored")
    labels = spec.labels
    pool = corpus_train_pool(spec)
    evaluation = pd.DataFrame(load_queries("eval")).rename(columns={spec.corpus_label_key: "label"})
    if args.cache and args.cache.exists():
        cached = np.load(args.cache)
        pool_scores, eval_scores = cached["pool"], cached["eval"]
        print(f"label scores read from {args.cache}")
    else:
        scorer = LocalLabelScorer(stack.ensure_local_model())
        tokens = scorer.first_tokens(labels)
        adapter = LlamaCppJSONAdapter()
        started = time.perf_counter()

        def score(frame: pd.DataFrame) -> np.ndarray:
            return np.array(
                [
                    scorer.scores(adapter.format(spec.signature, [], spec.inputs(row)), answer_prefix(spec), tokens)
                    for row in frame.to_dict("records")
                ]
            )

        pool_scores, eval_scores = score(pool), score(evaluation)
        passes = len(pool) + len(evaluation)
        print(f"scored {passes} queries in {time.perf_counter() - started:.0f} s", flush=True)
        if args.cache:
            np.savez(args.cache, pool=pool_scores, eval=eval_scores)
    index = {label: position for position, label in enumerate(labels)}
    pool_gold = pool["label"].map(index).to_numpy()
    eval_gold = evaluation["label"].map(index).to_numpy()
    deployed_pool = pool_scores.argmax(axis=1)  # the unoptimized router's answers, as its spans record them
    unoptimized = eval_scores.argmax(axis=1) == eval_gold
    mixes = target_mixes(labels)
    summary: dict[str, list[float]] = {}
    for seed in args.seeds:
        labeled = stratified_pick(pool, LABELED, seed=seed)
        fit = stratified_pick(labeled, FIT, seed=seed)
        fit_positions = pool.index.get_indexer(fit.index)
        bias = fit_bias(pool_scores[fit_positions], fit["label"].tolist(), labels)
        # What `calibrated` serves since 2026-12-07 night: the bias shrunk to the gate's class-recall rule.
        shrink = shrink_to_gate(pool_scores[fit_positions], bias, pool_gold[fit_positions], GATE_MAX_RECALL_DROP)
        fit_mix = np.bincount(pool_gold[fit_positions], minlength=len(labels)) / len(fit)
        labeled_positions = pool.index.get_indexer(labeled.index)
        confusion = np.zeros((len(labels), len(labels)))
        for answer, gold in zip(deployed_pool[labeled_positions], pool_gold[labeled_positions]):
            confusion[answer, gold] += 1
        confusion /= np.maximum(confusion.sum(axis=0, keepdims=True), 1)
        unlabeled = np.setdiff1d(np.arange(len(pool)), labeled_positions)
        rng = np.random.default_rng(1000 + seed)
        biased = (eval_scores + bias).argmax(axis=1) == eval_gold
        recall_change = {
            label: biased[eval_gold == index].mean() - unoptimized[eval_gold == index].mean()
            for index, label in enumerate(labels)
        }
        worst = min(recall_change, key=recall_change.get)
        print(
            f"seed {seed} bias, recall change per label on the eval queries: "
            + ", ".join(f"{label} {change:+.3f}" for label, change in recall_change.items())
            + f"; worst single-label mix {worst} {recall_change[worst]:+.3f}"
            + f" (the gate's {GATE_MAX_RECALL_DROP:.2f} class-recall rule would "
            + ("block it)" if -recall_change[worst] > GATE_MAX_RECALL_DROP else "pass it)")
            + f"; shrunk to the gate on the fit examples: x{shrink}",
            flush=True,
        )
        for name, mix in mixes.items():
            counts = rng.multinomial(args.traffic, mix)
            traffic = np.concatenate(
                [rng.choice(unlabeled[pool_gold[unlabeled] == label], size=count) for label, count in enumerate(counts)]
            )
            answered = np.bincount(deployed_pool[traffic], minlength=len(labels)) / len(traffic)
            estimate = estimated_mix(confusion, answered)
            adapted = np.log(np.maximum(estimate, MIX_FLOOR) / fit_mix)
            p_value = shift_p_value(deployed_pool[labeled_positions], deployed_pool[traffic], len(labels))
            shifts = {
                "shrunk to the gate": (shrink - 1) * bias,
                "adapted": adapted,
                "adapted if shifted": adapted if p_value < SHIFT_P else np.zeros(len(labels)),
                "oracle mix": np.log(mix / fit_mix),
            }
            error = np.abs(estimate - mix).sum() / 2
            cells = [f"seed {seed} {name:>14}: mix error {error:.3f}, shift p {p_value:.3f}"]
            for variant, correct in (
                ("bias", biased),
                *((v, (eval_scores + bias + s).argmax(axis=1) == eval_gold) for v, s in shifts.items()),
            ):
                accuracy, gain, low, high = weighted_comparison(correct, unoptimized, eval_gold, mix, seed)
                summary.setdefault(f"{variant}|{name}|{seed}", []).append(gain)
                cells.append(f"{variant} {accuracy:.3f} ({gain:+.3f} [{low:+.3f}, {high:+.3f}])")
            base = weighted_comparison(unoptimized, unoptimized, eval_gold, mix, seed)[0]
            print(f"{'; '.join(cells)}; unoptimized {base:.3f}", flush=True)
    for seed in args.seeds:
        shifted = [name for name in mixes if name != "uniform"]
        means = {
            variant: np.mean([summary[f"{variant}|{name}|{seed}"][0] for name in shifted])
            for variant in ("bias", "shrunk to the gate", "adapted", "adapted if shifted", "oracle mix")
        }
        worst = {variant: min(summary[f"{variant}|{name}|{seed}"][0] for name in shifted) for variant in means}
        uniform = {variant: summary[f"{variant}|uniform|{seed}"][0] for variant in means}
        for title, figures in (("shifted mixes, mean", means), ("worst shifted mix", worst), ("uniform", uniform)):
            shown = ", ".join(f"{variant} {value:+.3f}" for variant, value in figures.items())
            print(f"seed {seed}: {title} gain over unoptimized: {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
