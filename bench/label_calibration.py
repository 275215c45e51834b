"""Benchmark: the local LM's label scores, and what a per-label bias fitted on a tenant's data does.

The unoptimized module's prompt (the adapter's messages through the model's own chat template,
followed by ``{ "<label field>": "``, which is how the schema-constrained answer always begins) is
evaluated once per query in-process with llama.cpp; the log-probabilities of each label's first
token, renormalized over the labels, are the module's label scores. Their argmax is the answer
the schema-constrained module gives. On top of them, fitted without any LM call beyond scoring the
training queries once:

- ``contextual``: subtract the scores of content-free queries ("", "N/A", "[MASK]"; 3 LM calls),
  the usual calibration of a small LM's label prior.
- ``bias``: a per-label bias maximizing the likelihood of the gold labels of ``--fit`` training
  examples (the seed's stratified draw); ``half bias`` adds half of it.
- ``bias + classifier``: the bias plus half the log-probabilities of the fast path's TF-IDF +
  logistic-regression classifier, trained on the seed's ``--train`` examples.
- ``bias + classifier vote``: what the optimizer ``calibrated`` serves where the registry turns the
  vote on: the product's label classifier (TF-IDF beside static word vectors) trained on the seed's
  ``--train`` examples, and bias and classifier weight fitted together on the ``--fit`` examples
  with the classifier's out-of-fold log-probabilities for them.
- ``classifier alone``: the argmax of the product's label classifier trained on the ``--train``
  examples (what the fast path would answer if it answered everything).
- ``cascade``, ``cascade (LM evidence)``: the fast path in front of what ``calibrated`` serves (the
  bias, plus the vote where the registry turns it on; before 2026-11-29 afternoon, the bias alone
  for every module). The first with the product's threshold rule (LM accuracy unknown: 0.9,
  precision floor 0.8); the second with the rule tried on 2026-11-29 and not adopted: the LM's
  cross-fitted correctness on the fit examples (bias fitted on the other 4 of 5 folds), their mean
  for the other training examples, and the floor replaced by "at least the LM's estimated accuracy
  on the same queries".
- ``cascade (router evidence)``: the product's rule with the evidence a real tenant's training rows
  carry, the deployed router's recorded answer to each query (``router_label``), here the
  unoptimized module's (the argmax of its label scores): a tenant's first lane.
- ``labeled demos`` and ``labeled demos + bias`` (``--demos-per-label N``, N > 0): the prompt of
  the optimizer ``labeled`` (N class-medoid demos per label from the seed's ``--train`` examples)
  scored instead of the unoptimized one, alone and with a bias fitted on its own scores of the
  ``--fit`` examples. The gain is still against the unoptimized module without demos.

Every variant answers all corpus eval queries and, for modality, the external holdout
(``../shared/holdout``: evaluation only, never fitted on). Printed per seed: accuracy and the
paired difference to the unoptimized label scores with its 95 % bootstrap interval and McNemar p.

    .venv/bin/python bench/label_calibration.py [--module modality|routing] [--train 130 [260 390]]
        [--fit 130 50] [--seeds 0 1 2] [--draw stratified|contiguous] [--demos-per-label 0] [--out FILE]

Several ``--train`` sizes share one scoring pass: a learning curve for the classifier, its vote
and the cascade (390 is the whole train split, so its seeds differ only in folds and fit draw).

``--draw contiguous`` takes seed N's training examples as the corpus train split's rows
N·train … (N+1)·train − 1 in file order instead of a stratified draw: a second look with label
mixes that are not balanced (seed 0 is the set the ``lm`` test of ``calibrated`` trains on).

Only modules with one output field are scored (cross_modal writes ``needs_fusion`` first).

Serving such a module needs the label log-probabilities from the LM server on every call.
``--serving-cost N`` measures what that costs on the stack's server: N unoptimized modality calls
with the server as the stack starts it (``--logits_all False``), then N asking for
``top_logprobs`` (llama-cpp-python's server only returns log-probabilities with
``--logits_all True``).

    .venv/bin/python bench/label_calibration.py --serving-cost 25
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import numpy as np
import pandas as pd
from dspy.adapters.json_adapter import _get_structured_outputs_response_format
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from cogniverse_assets.blending import stratified_pick
from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.fast_path import MAX_CASCADE_LOSS, lm_accuracy_estimate, train_fast_path
from cogniverse_assets.modules.calibrated import (
    answer_prefix,
    can_calibrate,
    classifier_and_fit_votes,
    classifier_log_probabilities,
    fit_bias,
    fit_bias_and_weight,
)
from cogniverse_assets.modules.demos import class_medoid_demos
from cogniverse_assets.modules.label_classifier import LabelClassifier, out_of_fold_probabilities
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec, get_module
from cogniverse_assets.modules.text_features import TextEmbedder, feature_text
from cogniverse_assets.scoring import paired_comparison
from cogniverse_resources import stack
from cogniverse_resources.label_scorer import LocalLabelScorer, log_normalized
from cogniverse_resources.lm import LlamaCppJSONAdapter

sys.path.insert(0, str(Path(__file__).parent))
from optimizers import DEFAULT_HOLDOUT, EvalSet, corpus_train_pool, eval_sets  # noqa: E402 - the sibling bench's data

CONTENT_FREE = ("", "N/A", "[MASK]")
CLASSIFIER_WEIGHT = 0.5
EVIDENCE_FOLDS = 5


def cross_fitted_correctness(
    scores: np.ndarray, labels: list[str], label_order: tuple[str, ...], seed: int
) -> np.ndarray:
    """Whether the biased LM answers each fit example right, the bias fitted without it."""
    gold = np.array([label_order.index(label) for label in labels])
    correct = np.zeros(len(labels))
    folds = StratifiedKFold(n_splits=EVIDENCE_FOLDS, shuffle=True, random_state=seed)
    for fit_index, held_index in folds.split(scores, gold):
        bias = fit_bias(scores[fit_index], [labels[i] for i in fit_index], label_order)
        correct[held_index] = (scores[held_index] + bias).argmax(axis=1) == gold[held_index]
    return correct


def evidence_threshold(confidence: np.ndarray, fast_correct: np.ndarray, lm_correct: np.ndarray) -> float | None:
    """The lowest threshold whose estimated cascade loss is within MAX_CASCADE_LOSS and whose fast
    answers are at least as accurate as the LM's estimate on the same queries."""
    best = None
    for threshold in sorted(set(confidence.tolist()), reverse=True):
        covered = confidence >= threshold
        fast_accuracy, lm_accuracy = fast_correct[covered].mean(), lm_correct[covered].mean()
        if covered.mean() * (lm_accuracy - fast_accuracy) <= MAX_CASCADE_LOSS and fast_accuracy >= lm_accuracy:
            best = float(threshold)
    return best


def serving_cost(spec: RoutingModuleSpec, calls: int) -> int:
    """Latency of the unoptimized module's calls on the stack's server, without and with logprobs."""
    adapter = LlamaCppJSONAdapter()
    schema = _get_structured_outputs_response_format(spec.signature).model_json_schema()
    queries = [spec.inputs(row) for row in load_queries("eval")[:calls]]
    model = stack.ensure_local_model()
    for logprobs in (False, True):
        port = stack.free_port()
        service = stack.lm_service(
            port=port, directory=stack.run_dir() / f"bench-logprobs-{logprobs}", model_path=model
        )
        command = service.spec.command
        command[command.index("--logits_all") + 1] = str(logprobs)
        service.start()
        try:
            latencies = []
            for inputs in queries:
                body = {
                    "model": stack.LOCAL_MODEL_ALIAS,
                    "messages": adapter.format(spec.signature, [], inputs),
                    "temperature": 0,
                    "max_tokens": 64,
                    "response_format": {"type": "json_object", "schema": schema},
                    **({"logprobs": True, "top_logprobs": 20} if logprobs else {}),
                }
                started = time.perf_counter()
                response = httpx.post(f"{stack.local_lm_api_base(port)}/chat/completions", json=body, timeout=300)
                response.raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)
            print(
                f"logprobs {logprobs}: p50 {statistics.median(latencies):.0f} ms, "
                f"p95 {np.percentile(latencies, 95):.0f} ms over {len(latencies)} calls",
                flush=True,
            )
        finally:
            service.stop()
    return 0


@dataclass
class Row:
    seed: int
    train: int
    fit: int
    variant: str
    eval_set: str
    accuracy: float
    gain: float
    interval: list[float]
    mcnemar_p: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="modality", choices=list(ROUTING_MODULES))
    parser.add_argument("--train", type=int, nargs="+", default=[130], help="training examples per seed (classifier)")
    parser.add_argument("--fit", type=int, nargs="+", default=[130, 50], help="examples the bias is fitted on")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--draw", choices=["stratified", "contiguous"], default="stratified")
    parser.add_argument("--demos-per-label", type=int, default=0, help="also score `labeled`'s prompt, N per label")
    parser.add_argument("--holdout", type=Path, default=DEFAULT_HOLDOUT, help="external holdout (modality only)")
    parser.add_argument("--out", type=Path, default=None, help="write every row as JSON here")
    parser.add_argument("--serving-cost", type=int, default=0, metavar="N", help="time N calls per server mode")
    args = parser.parse_args()
    spec = get_module(args.module)
    if args.serving_cost:
        return serving_cost(spec, args.serving_cost)
    if not can_calibrate(spec):
        raise SystemExit(
            f"{spec.name}: output fields {list(spec.signature.output_fields)}; only a lone label is scored"
        )
    # The product's scorer (what the optimizer `calibrated` fits on), so the bench measures it.
    scorer = LocalLabelScorer(stack.ensure_local_model())
    label_tokens = scorer.first_tokens(spec.labels)
    adapter = LlamaCppJSONAdapter()
    timings: list[float] = []

    def score_all(inputs_list: list[dict], demos: list | None = None) -> np.ndarray:
        rows = []
        for inputs in inputs_list:
            messages = adapter.format(spec.signature, demos or [], inputs)
            started = time.perf_counter()
            rows.append(scorer.scores(messages, answer_prefix(spec), label_tokens))
            timings.append((time.perf_counter() - started) * 1000)
        return np.array(rows)

    def fitted_bias(where: str, scores: np.ndarray, part: pd.DataFrame, what: str) -> np.ndarray:
        bias = fit_bias(scores, part["label"].tolist(), spec.labels)
        shown = ", ".join(f"{label} {value:+.2f}" for label, value in zip(spec.labels, bias))
        print(f"{where} fit {len(part)} {what}: {shown}")
        return bias

    sets: list[EvalSet] = eval_sets(spec, args.holdout, None)
    content_free = score_all([spec.inputs({"query": query}) for query in CONTENT_FREE])
    eval_scores = {data.name: score_all(data.inputs) for data in sets}
    pool = corpus_train_pool(spec)
    if args.draw == "contiguous" and (max(args.seeds) + 1) * max(args.train) > len(pool):
        raise SystemExit(f"--draw contiguous: seeds {args.seeds} x {max(args.train)} rows exceed {len(pool)} rows")
    pool_scores = dict(zip(pool["query"], score_all([spec.inputs(row) for row in pool.to_dict("records")])))
    print(f"scored {len(timings)} queries, p50 {np.percentile(timings, 50):.0f} ms per query", flush=True)

    def answers(scores: np.ndarray) -> list[str]:
        return [spec.labels[index] for index in scores.argmax(axis=1)]

    baseline = {data.name: [a in ok for a, ok in zip(answers(eval_scores[data.name]), data.accept)] for data in sets}
    for data in sets:
        print(f"unoptimized (label scores) {data.name}: {np.mean(baseline[data.name]):.3f}", flush=True)
    rows: list[Row] = []

    def record(seed: int, train_size: int, fit: int, variant: str, adjusted: dict[str, np.ndarray]) -> None:
        cells = []
        for data in sets:
            correct = [a in ok for a, ok in zip(answers(adjusted[data.name]), data.accept)]
            pc = paired_comparison(correct, baseline[data.name], level=0.95)
            accuracy = float(np.mean(correct))
            rows.append(
                Row(seed, train_size, fit, variant, data.name, accuracy, pc.gain, [pc.low, pc.high], pc.mcnemar_p)
            )
            interval = f"[{pc.low:+.3f}, {pc.high:+.3f}]"
            cells.append(f"{data.name} {accuracy:.3f} ({pc.gain:+.3f} {interval}, p={pc.mcnemar_p:.2f})")
        print(f"train {train_size} seed {seed} fit {fit} {variant}: " + "; ".join(cells), flush=True)

    contextual = content_free.mean(axis=0)
    record(-1, 0, 3, "contextual", {name: log_normalized(s - contextual) for name, s in eval_scores.items()})
    for train_size, seed in ((size, seed) for size in args.train for seed in args.seeds):
        where = f"train {train_size} seed {seed}"
        train = (
            stratified_pick(pool, train_size, seed=seed)
            if args.draw == "stratified"
            else pool.iloc[seed * train_size : (seed + 1) * train_size]
        )
        texts = [feature_text(spec.inputs(row)) for row in train.to_dict("records")]
        embedder = TextEmbedder.fit(texts)
        classifier = LogisticRegression(C=10.0, max_iter=2000).fit(embedder.transform(texts), train["label"])
        order = [list(classifier.classes_).index(label) for label in spec.labels]

        fast_classifier = LabelClassifier.fit(texts, train["label"].tolist())
        fast_scores = {d.name: classifier_log_probabilities(fast_classifier, d.inputs, spec.labels) for d in sets}
        record(seed, train_size, 0, "classifier alone", fast_scores)

        def classifier_scores(data: EvalSet) -> np.ndarray:
            texts = [feature_text(inputs) for inputs in data.inputs]
            return np.log(classifier.predict_proba(embedder.transform(texts))[:, order] + 1e-9)

        # What does not depend on the fit draw: the product's thresholds (with the 0.9 default and with
        # the unoptimized module's answers as router evidence) and the out-of-fold votes on `train`.
        fast = train_fast_path(spec, train, lm_accuracy_estimate(None), seed=seed).fast_path
        unoptimized_answers = [spec.labels[int(np.argmax(pool_scores[q]))] for q in train["query"]]
        with_router = train.assign(router_label=unoptimized_answers)
        fast_router = train_fast_path(spec, with_router, lm_accuracy_estimate(None), seed=seed).fast_path
        probabilities, classes = out_of_fold_probabilities(texts, train["label"].tolist(), seed=seed)
        oof_confidence = probabilities.max(axis=1)
        oof_correct = np.asarray(classes)[probabilities.argmax(axis=1)] == train["label"].to_numpy()

        for fit in args.fit:
            part = train if fit >= len(train) else stratified_pick(train, fit, seed=seed)
            fit_scores = np.array([pool_scores[q] for q in part["query"]])
            bias = fitted_bias(where, fit_scores, part, "bias")
            served = {name: s + bias for name, s in eval_scores.items()}
            record(seed, train_size, fit, "bias", served)
            record(seed, train_size, fit, "half bias", {name: s + bias / 2 for name, s in eval_scores.items()})
            record(
                seed,
                train_size,
                fit,
                "bias + classifier",
                {d.name: eval_scores[d.name] + bias + CLASSIFIER_WEIGHT * classifier_scores(d) for d in sets},
            )
            voter, votes, _ = classifier_and_fit_votes(spec, train, part.index, seed)
            if voter is not None:
                voted_bias, weight = fit_bias_and_weight(fit_scores, votes, part["label"].tolist(), spec.labels)
                print(f"{where} fit {fit} classifier vote weight {weight:.2f}")
                voted = {
                    d.name: eval_scores[d.name]
                    + voted_bias
                    + weight * classifier_log_probabilities(voter, d.inputs, spec.labels)
                    for d in sets
                }
                record(seed, train_size, fit, "bias + classifier vote", voted)
                if spec.calibration_adds_classifier:
                    served = voted
            lm_evidence = cross_fitted_correctness(fit_scores, part["label"].tolist(), spec.labels, seed)
            lm_correct = pd.Series(lm_evidence.mean(), index=train.index)
            lm_correct[part.index] = lm_evidence
            evidence = evidence_threshold(oof_confidence, oof_correct, lm_correct.to_numpy())
            for variant, threshold in (
                ("cascade", fast.threshold if fast else None),
                ("cascade (LM evidence)", evidence),
                ("cascade (router evidence)", fast_router.threshold if fast_router else None),
            ):
                if threshold is None:
                    print(f"{where} fit {fit} {variant}: fast path off")
                    continue
                cascaded = {}
                for d in sets:
                    confident = np.exp(fast_scores[d.name].max(axis=1)) >= threshold
                    cascaded[d.name] = np.where(confident[:, None], fast_scores[d.name], served[d.name])
                    print(f"{where} fit {fit} {variant} {d.name}: fast share {confident.mean():.0%}")
                record(seed, train_size, fit, variant, cascaded)
        if args.demos_per_label:
            demos = class_medoid_demos(spec, train, per_label=args.demos_per_label)
            with_demos = {data.name: score_all(data.inputs, demos) for data in sets}
            record(seed, train_size, 0, "labeled demos", with_demos)
            for fit in args.fit:
                part = train if fit >= len(train) else stratified_pick(train, fit, seed=seed)
                fit_scores = score_all([spec.inputs(row) for row in part.to_dict("records")], demos)
                bias = fitted_bias(where, fit_scores, part, "bias over labeled demos")
                shifted = {name: s + bias for name, s in with_demos.items()}
                record(seed, train_size, fit, "labeled demos + bias", shifted)
    if args.out:
        args.out.write_text(json.dumps([asdict(row) for row in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
