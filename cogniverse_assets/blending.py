"""Progressive blending of real and synthetic examples, and the train/validation split.

Strategy by the number of labeled real examples ``n`` of one tenant × module:

- ``n < COLD_START_MAX_REAL``  → **synthetic_only** (cold start): train on synthetic examples; every
  real label there is goes to validation.
- ``n < PURE_REAL_MIN``        → **hybrid**: ``synthetic_data_ratio`` is exactly the fraction of the
  final *training* examples that are synthetic.
- otherwise                    → **pure_real**: synthetic data is not used.

``use_synthetic_data=False`` turns the first two into real-only training.

Validation is real data only whenever real labels exist (synthetic data never grades a model),
preferring human and LLM annotations over the router's own confident answers, stratified by label
and seeded. A query never appears in both splits. When real data exceed ``REPLAY_BUFFER_SIZE``,
training examples are drawn by experience replay: weighted by label confidence, by the rarity of
their label (diversity) and by the shaped reward of the request they came from — not the newest N.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass

import pandas as pd

from cogniverse_resources.tenant import RoutingConfig
from cogniverse_assets.modules.metrics import shaped_reward

COLD_START_MAX_REAL = 20
PURE_REAL_MIN = 200
REPLAY_BUFFER_SIZE = 1000
VALIDATION_FRACTION = 0.25
MIN_VALIDATION_EXAMPLES = 5
MAX_VALIDATION_EXAMPLES = 200
COLD_START_SYNTHETIC_EXAMPLES = 40
# Zero-reward experiences keep a floor of priority so that they are still replayed now and then.
REWARD_FLOOR = 0.2
PROVENANCE_WEIGHT = {"human": 1.0, "llm": 0.8, "router": 0.6, "synthetic": 0.5}


@dataclass(frozen=True)
class BlendPlan:
    strategy: str
    reason: str
    real_available: int
    synthetic_needed: int


def normalize_query(query: str) -> str:
    return " ".join(str(query).lower().split())


def blend_plan(real_labeled: int, config: RoutingConfig) -> BlendPlan:
    """How to blend, given the number of labeled real examples; also sizes the synthetic request."""
    if not config.use_synthetic_data:
        return BlendPlan("pure_real", "use_synthetic_data is off", real_labeled, 0)
    if real_labeled < COLD_START_MAX_REAL:
        return BlendPlan(
            "synthetic_only",
            f"{real_labeled} labeled real examples < {COLD_START_MAX_REAL} (cold start)",
            real_labeled,
            COLD_START_SYNTHETIC_EXAMPLES,
        )
    if real_labeled < PURE_REAL_MIN:
        train_real = real_labeled - validation_size(real_labeled)
        return BlendPlan(
            "hybrid",
            f"{COLD_START_MAX_REAL} <= {real_labeled} labeled real examples < {PURE_REAL_MIN}",
            real_labeled,
            synthetic_count_for_ratio(train_real, config.synthetic_data_ratio),
        )
    return BlendPlan("pure_real", f"{real_labeled} labeled real examples >= {PURE_REAL_MIN}", real_labeled, 0)


def synthetic_count_for_ratio(real_train: int, ratio: float) -> int:
    """Synthetic examples s such that s / (s + real_train) == ratio, rounded to a whole example."""
    if ratio <= 0 or real_train <= 0:
        return 0
    return round(ratio * real_train / (1 - ratio))


def validation_size(real_labeled: int) -> int:
    if real_labeled < COLD_START_MAX_REAL:
        return real_labeled
    return max(MIN_VALIDATION_EXAMPLES, min(MAX_VALIDATION_EXAMPLES, round(real_labeled * VALIDATION_FRACTION)))


def stratified_pick(frame: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """``size`` rows with each label represented in proportion (at least one per label if possible)."""
    if size >= len(frame):
        return frame
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in zip(frame.index, frame["label"]):
        by_label[label].append(index)
    quotas = {label: max(1, math.floor(size * len(rows) / len(frame))) for label, rows in by_label.items()}
    while sum(quotas.values()) > size:  # more labels than slots: trim the largest quotas first
        largest = max(quotas, key=lambda label: (quotas[label], label))
        quotas[largest] -= 1
    leftovers = []
    chosen = []
    for label in sorted(by_label):
        rows = by_label[label][:]
        rng.shuffle(rows)
        chosen.extend(rows[: quotas[label]])
        leftovers.extend(rows[quotas[label] :])
    rng.shuffle(leftovers)
    chosen.extend(leftovers[: size - len(chosen)])
    return frame.loc[sorted(chosen)]


def replay_sample(frame: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """Prioritized experience replay: keep ``size`` rows, weighted by confidence × label rarity.

    Weighted sampling without replacement (Efraimidis–Spirakis keys u^(1/w)), seeded.
    """
    if len(frame) <= size:
        return frame
    rng = random.Random(seed)
    counts = Counter(frame["label"])
    keys = []
    for index, row in frame.iterrows():
        confidence = _known(row.get("label_score"), 0.5)
        weight = PROVENANCE_WEIGHT.get(row["provenance"], 0.5) * max(confidence, 0.05) / counts[row["label"]]
        weight *= REWARD_FLOOR + _outcome_reward(row)
        keys.append((rng.random() ** (1.0 / weight), index))
    keep = [index for _, index in sorted(keys, reverse=True)[:size]]
    return frame.loc[sorted(keep)]


def _known(value, default):
    return default if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _outcome_reward(row: pd.Series) -> float:
    """The design's shaped reward of the request the example came from (0.5 when unknown)."""
    router_label = row.get("router_label")
    if router_label is None or pd.isna(router_label):
        return 0.5  # synthetic or hand-made examples have no recorded outcome
    success = row.get("success")
    return shaped_reward(
        success=None if success is None or (isinstance(success, float) and math.isnan(success)) else bool(success),
        correct=row["router_label"] == row["label"],
        satisfaction=_known(row.get("satisfaction"), None),
        latency_ms=_known(row.get("processing_time_ms"), None),
    )


@dataclass
class TrainingSet:
    plan: BlendPlan
    train: pd.DataFrame
    validation: pd.DataFrame
    validation_source: str
    notes: list[str]

    @property
    def synthetic_fraction(self) -> float:
        if self.train.empty:
            return 0.0
        return float((self.train["provenance"] == "synthetic").mean())


def build_training_set(real: pd.DataFrame, synthetic: pd.DataFrame, config: RoutingConfig, seed: int = 0) -> TrainingSet:
    """Blend labeled real examples (provenance human/llm/router) with synthetic ones and split."""
    notes: list[str] = []
    real = real.assign(_key=real["query"].map(normalize_query)).drop_duplicates("_key", keep="last")
    plan = blend_plan(len(real), config)

    annotated = real[real["provenance"].isin(["human", "llm"])]
    pool = annotated if len(annotated) >= MIN_VALIDATION_EXAMPLES else real
    validation = stratified_pick(pool, min(validation_size(len(real)), len(pool)), seed)
    validation_source = "real" if len(validation) else "none"
    train_real = real.drop(index=validation.index)
    # A query that is graded must not also be taught.
    train_real = train_real[~train_real["_key"].isin(set(validation["_key"]))]

    if plan.strategy == "synthetic_only":
        train_real = train_real.iloc[0:0]
    if len(train_real) > REPLAY_BUFFER_SIZE:
        notes.append(f"experience replay kept {REPLAY_BUFFER_SIZE} of {len(train_real)} real training examples")
        train_real = replay_sample(train_real, REPLAY_BUFFER_SIZE, seed)

    synthetic = synthetic.assign(_key=synthetic["query"].map(normalize_query)) if len(synthetic) else synthetic.assign(_key=[])
    synthetic = synthetic[~synthetic["_key"].isin(set(real["_key"]))].drop_duplicates("_key")
    if plan.strategy == "hybrid":
        wanted = synthetic_count_for_ratio(len(train_real), config.synthetic_data_ratio)
        if len(synthetic) < wanted:
            notes.append(f"only {len(synthetic)} of {wanted} synthetic examples available: the synthetic fraction is below the configured ratio")
        synthetic = stratified_pick(synthetic, min(wanted, len(synthetic)), seed) if len(synthetic) else synthetic
    elif plan.strategy == "pure_real":
        synthetic = synthetic.iloc[0:0]

    if validation.empty and plan.strategy == "synthetic_only" and len(synthetic) >= 2 * MIN_VALIDATION_EXAMPLES:
        # No real label exists yet: the only possible grader is held-out synthetic data. Say so.
        validation = stratified_pick(synthetic, validation_size(len(synthetic) * 4) // 4 or MIN_VALIDATION_EXAMPLES, seed)
        synthetic = synthetic.drop(index=validation.index)
        validation_source = "synthetic (no real labels yet)"
        notes.append("validation is synthetic because the tenant has no labeled real data yet")

    train = pd.concat([train_real, synthetic], ignore_index=True).drop(columns="_key")
    return TrainingSet(plan, train, validation.drop(columns="_key").reset_index(drop=True), validation_source, notes)
