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
- ``labeled demos`` and ``labeled demos + bias`` (``--demos-per-label N``, N > 0): the prompt of
  the optimizer ``labeled`` (N class-medoid demos per label from the seed's ``--train`` examples)
  scored instead of the unoptimized one, alone and with a bias fitted on its own scores of the
  ``--fit`` examples. The gain is still against the unoptimized module without demos.

Every variant answers all corpus eval queries and, for modality, the external holdout
(``../shared/holdout``: evaluation only, never fitted on). Printed per seed: accuracy and the
paired difference to the unoptimized label scores with its 95 % bootstrap interval and McNemar p.

    .venv/bin/python bench/label_calibration.py [--module modality|routing] [--train 130]
        [--fit 130 50] [--seeds 0 1 2] [--demos-per-label 0] [--out FILE]

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

from cogniverse_assets.blending import stratified_pick
from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.calibrated import answer_prefix, can_calibrate, fit_bias
from cogniverse_assets.modules.demos import class_medoid_demos
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec, get_module
from cogniverse_assets.modules.text_features import TextEmbedder, feature_text
from cogniverse_assets.scoring import paired_comparison
from cogniverse_resources import stack
from cogniverse_resources.label_scorer import LocalLabelScorer, log_normalized
from cogniverse_resources.lm import LlamaCppJSONAdapter

sys.path.insert(0, str(Path(__file__).parent))
from optimizers import DEFAULT_HOLDOUT, EvalSet, eval_sets  # noqa: E402 - the sibling bench's eval sets

CONTENT_FREE = ("", "N/A", "[MASK]")
CLASSIFIER_WEIGHT = 0.5


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
    parser.add_argument("--train", type=int, default=130, help="training examples per seed (classifier)")
    parser.add_argument("--fit", type=int, nargs="+", default=[130, 50], help="examples the bias is fitted on")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
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

    def fitted_bias(seed: int, scores: np.ndarray, part: pd.DataFrame, what: str) -> np.ndarray:
        bias = fit_bias(scores, part["label"].tolist(), spec.labels)
        shown = ", ".join(f"{label} {value:+.2f}" for label, value in zip(spec.labels, bias))
        print(f"seed {seed} fit {len(part)} {what}: {shown}")
        return bias

    sets: list[EvalSet] = eval_sets(spec, args.holdout, None)
    content_free = score_all([spec.inputs({"query": query}) for query in CONTENT_FREE])
    eval_scores = {data.name: score_all(data.inputs) for data in sets}
    pool = (
        pd.DataFrame(load_queries("train")).rename(columns={spec.corpus_label_key: "label"}).assign(provenance="human")
    )
    pool_scores = dict(zip(pool["query"], score_all([spec.inputs(row) for row in pool.to_dict("records")])))
    print(f"scored {len(timings)} queries, p50 {np.percentile(timings, 50):.0f} ms per query", flush=True)

    def answers(scores: np.ndarray) -> list[str]:
        return [spec.labels[index] for index in scores.argmax(axis=1)]

    baseline = {data.name: [a in ok for a, ok in zip(answers(eval_scores[data.name]), data.accept)] for data in sets}
    for data in sets:
        print(f"unoptimized (label scores) {data.name}: {np.mean(baseline[data.name]):.3f}", flush=True)
    rows: list[Row] = []

    def record(seed: int, fit: int, variant: str, adjusted: dict[str, np.ndarray]) -> None:
        cells = []
        for data in sets:
            correct = [a in ok for a, ok in zip(answers(adjusted[data.name]), data.accept)]
            pc = paired_comparison(correct, baseline[data.name], level=0.95)
            accuracy = float(np.mean(correct))
            rows.append(Row(seed, fit, variant, data.name, accuracy, pc.gain, [pc.low, pc.high], pc.mcnemar_p))
            interval = f"[{pc.low:+.3f}, {pc.high:+.3f}]"
            cells.append(f"{data.name} {accuracy:.3f} ({pc.gain:+.3f} {interval}, p={pc.mcnemar_p:.2f})")
        print(f"seed {seed} fit {fit} {variant}: " + "; ".join(cells), flush=True)

    contextual = content_free.mean(axis=0)
    record(-1, 3, "contextual", {name: log_normalized(s - contextual) for name, s in eval_scores.items()})
    for seed in args.seeds:
        train = stratified_pick(pool, args.train, seed=seed)
        texts = [feature_text(spec.inputs(row)) for row in train.to_dict("records")]
        embedder = TextEmbedder.fit(texts)
        classifier = LogisticRegression(C=10.0, max_iter=2000).fit(embedder.transform(texts), train["label"])
        order = [list(classifier.classes_).index(label) for label in spec.labels]

        def classifier_scores(data: EvalSet) -> np.ndarray:
            texts = [feature_text(inputs) for inputs in data.inputs]
            return np.log(classifier.predict_proba(embedder.transform(texts))[:, order] + 1e-9)

        for fit in args.fit:
            part = train if fit >= len(train) else stratified_pick(train, fit, seed=seed)
            bias = fitted_bias(seed, np.array([pool_scores[q] for q in part["query"]]), part, "bias")
            record(seed, fit, "bias", {name: s + bias for name, s in eval_scores.items()})
            record(seed, fit, "half bias", {name: s + bias / 2 for name, s in eval_scores.items()})
            record(
                seed,
                fit,
                "bias + classifier",
                {d.name: eval_scores[d.name] + bias + CLASSIFIER_WEIGHT * classifier_scores(d) for d in sets},
            )
        if args.demos_per_label:
            demos = class_medoid_demos(spec, train, per_label=args.demos_per_label)
            with_demos = {data.name: score_all(data.inputs, demos) for data in sets}
            record(seed, 0, "labeled demos", with_demos)
            for fit in args.fit:
                part = train if fit >= len(train) else stratified_pick(train, fit, seed=seed)
                fit_scores = score_all([spec.inputs(row) for row in part.to_dict("records")], demos)
                bias = fitted_bias(seed, fit_scores, part, "bias over labeled demos")
                record(seed, fit, "labeled demos + bias", {name: s + bias for name, s in with_demos.items()})
    if args.out:
        args.out.write_text(json.dumps([asdict(row) for row in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
