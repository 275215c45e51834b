"""Benchmark: which text features the distilled fast path should learn from, with no LM involved.

For each module and seed, the bench's training pool (``stratified_pick`` of ``--train`` corpus train
queries) trains the fast-path classifier with each feature set and regularization strength. The
choice is made on training data only: out-of-fold accuracy over the product's stratified folds.
Then, as confirmation, each variant is scored on the corpus's held-out eval queries, together with
the out-of-fold coverage the product's threshold rule would give it (LM accuracy estimate 0.9, the
default without recorded router answers).

Feature sets: ``tfidf`` (word 1–2-grams + character 3–5-grams, the product's today),
``wordllama`` (static token embeddings averaged, 256 dimensions, weights inside the wheel) and
``concat`` (both blocks L2-normalized, concatenated).

    .venv/bin/python bench/fast_path_features.py [--modules modality routing cross_modal] [--seeds 0 1 2]
        [--holdout ../shared/holdout/external_routing_queries.jsonl]

The external holdout (modality only) is evaluation only: scored when given, never used to choose.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from cogniverse_assets.blending import stratified_pick
from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.fast_path import DEFAULT_LM_ACCURACY, choose_threshold
from cogniverse_assets.modules.demos import gold_rows
from cogniverse_assets.modules.label_classifier import FOLDS
from cogniverse_assets.modules.registry import ROUTING_MODULES, get_module
from cogniverse_assets.modules.text_features import (
    ClassifierFeatures,
    StaticWordVectors,
    TextEmbedder,
    feature_text,
)

STRENGTHS = (1.0, 10.0, 100.0)


# name -> fit(texts) returning transform(texts); concat is the product's ClassifierFeatures.
FEATURIZERS: dict[str, Callable] = {
    "tfidf": lambda texts: TextEmbedder.fit(texts).transform,
    "wordllama": lambda _texts: StaticWordVectors.installed().transform,
    "concat": lambda texts: ClassifierFeatures.fit(texts).transform,
}


def fit_predict(make, strength: float, fit_texts, fit_labels, texts) -> tuple[np.ndarray, np.ndarray]:
    transform = make(fit_texts)
    model = LogisticRegression(C=strength, max_iter=3000).fit(transform(fit_texts), fit_labels)
    probabilities = model.predict_proba(transform(texts))
    return model.classes_[probabilities.argmax(axis=1)], probabilities.max(axis=1)


def out_of_fold(make, strength: float, texts: list[str], labels: np.ndarray, seed: int) -> dict:
    counts = pd.Series(labels).value_counts()
    folds = StratifiedKFold(n_splits=min(FOLDS, int(counts.min())), shuffle=True, random_state=seed)
    confidence = np.zeros(len(texts))
    correct = np.zeros(len(texts), dtype=bool)
    for fit_index, held_index in folds.split(texts, labels):
        predicted, top = fit_predict(
            make, strength, [texts[i] for i in fit_index], labels[fit_index], [texts[i] for i in held_index]
        )
        confidence[held_index], correct[held_index] = top, predicted == labels[held_index]
    _threshold, figures = choose_threshold(confidence, correct, np.full(len(texts), DEFAULT_LM_ACCURACY))
    return {"oof_accuracy": float(correct.mean()), "oof_coverage": float(figures.get("oof_coverage", 0.0))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", default=list(ROUTING_MODULES), choices=list(ROUTING_MODULES))
    parser.add_argument("--train", type=int, default=130)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--holdout", type=Path, default=None, help="external holdout to score (modality only)")
    parser.add_argument("--out", type=Path, default=None, help="write every row as JSON here")
    args = parser.parse_args()
    rows = []
    for module in args.modules:
        spec = get_module(module)
        pool = pd.DataFrame(load_queries("train")).rename(columns={spec.corpus_label_key: "label"})
        corpus = load_queries("eval")
        eval_texts = [feature_text(spec.inputs(r)) for r in corpus]
        eval_accept = [[str(r[spec.corpus_label_key])] for r in corpus]
        holdout = []
        if module == "modality" and args.holdout is not None:
            holdout = [json.loads(line) for line in args.holdout.read_text().splitlines() if line.strip()]
        holdout_texts = [feature_text(spec.inputs(r)) for r in holdout]
        for seed in args.seeds:
            train = gold_rows(spec, stratified_pick(pool.assign(provenance="human"), args.train, seed=seed))
            texts = [feature_text(row["inputs"]) for row in train]
            labels = np.array([row["label"] for row in train])
            for name, make in FEATURIZERS.items():
                for strength in STRENGTHS:
                    row = {"module": module, "seed": seed, "features": name, "C": strength}
                    row.update(out_of_fold(make, strength, texts, labels, seed))
                    predicted, _ = fit_predict(make, strength, texts, labels, eval_texts)
                    row["eval_accuracy"] = float(np.mean([p in ok for p, ok in zip(predicted, eval_accept)]))
                    if holdout:
                        predicted, _ = fit_predict(make, strength, texts, labels, holdout_texts)
                        accept = [r["accept"] for r in holdout]
                        row["holdout_accuracy"] = float(np.mean([p in ok for p, ok in zip(predicted, accept)]))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    frame = pd.DataFrame(rows)
    summary = frame.groupby(["module", "features", "C"]).mean(numeric_only=True).drop(columns="seed").round(3)
    print("\nmean over seeds\n" + summary.to_string())
    chosen = frame[frame.module.isin(["modality", "routing"])].groupby(["features", "C"]).oof_accuracy.mean()
    print("\nmodality + routing, mean out-of-fold accuracy (the choice)\n" + chosen.round(3).to_string())
    print(f"chosen: {chosen.idxmax()} ({chosen.max():.3f})")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
