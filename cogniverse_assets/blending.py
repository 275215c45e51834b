"""Progressive blending of real and synthetic examples, and the train/validation split.

Strategy by the number of labeled real examples ``n`` of one tenant × module:

- ``n < COLD_START_MAX_REAL``  → **synthetic_only** (cold start): train on synthetic examples; every
  human/LLM-annotated label there is goes to validation.
- ``n < PURE_REAL_MIN``        → **hybrid**: ``synthetic_data_ratio`` is exactly the fraction of the
  final *training* examples that are synthetic.
- otherwise                    → **pure_real**: synthetic data is not used.

``use_synthetic_data=False`` turns the first two into real-only training.

One example per normalized query: the label of highest precedence wins (human > llm > router),
the newest within the same kind (``start_time``, else row order).

Validation grades on human and LLM annotations only — never on the router's own answers. Each
normalized query belongs to the validation side once and for all by a seeded hash (uniform in
[0, 1), below ``VALIDATION_FRACTION``), so a query trained on stays in training when more data
arrive. The split is topped up in hash order to ``MIN_VALIDATION_EXAMPLES`` and to one example of
every label, and capped at ``MAX_VALIDATION_EXAMPLES`` by dropping the largest hashes. Router-labeled
queries on the validation side are held out of training (they are graded once annotated). With
fewer than ``MIN_VALIDATION_EXAMPLES`` annotations there is no validation split
(``validation_source`` says why), except in cold start with no usable annotation, where held-out
synthetic data grade (``validation_source`` starts with "synthetic"; never promoted automatically).

When real data exceed ``REPLAY_BUFFER_SIZE``, training examples are drawn by experience replay:
weighted by label confidence, by the rarity of their label (diversity) and by the shaped reward of
the request they came from — not the newest N.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass

import pandas as pd

from cogniverse_assets.modules.metrics import shaped_reward
from cogniverse_resources.tenant import RoutingConfig

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
# Label precedence when one normalized query has several labeled examples (lower wins).
LABEL_PRECEDENCE = {"human": 0, "llm": 1, "router": 2}
ANNOTATED = ("human", "llm")


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


def split_hash(key: str, seed: int = 0) -> float:
    """A normalized query's fixed place in [0, 1): below ``VALIDATION_FRACTION`` it is validation."""
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def dedupe_by_precedence(real: pd.DataFrame) -> pd.DataFrame:
    """One row per normalized query (``_key``): human > llm > router, the newest within a kind.

    Newest by ``start_time`` when the rows have one, else the later row; the kept rows stay in
    their original order."""
    times = (
        pd.to_datetime(real["start_time"], utc=True, errors="coerce", format="ISO8601")
        if "start_time" in real and len(real)
        else pd.Series(pd.NaT, index=real.index, dtype="datetime64[ns, UTC]")
    )
    ranked = real.assign(
        _rank=real["provenance"].map(LABEL_PRECEDENCE).fillna(len(LABEL_PRECEDENCE)),
        _time=times,
        _order=range(len(real)),
    )
    # Per key: best rank first, then newest time (unknown times count as oldest), then the later row.
    ranked = ranked.sort_values(
        ["_key", "_rank", "_time", "_order"], ascending=[True, True, False, False], na_position="last", kind="stable"
    )
    kept = ranked.drop_duplicates("_key", keep="first").sort_values("_order", kind="stable")
    return kept.drop(columns=["_rank", "_time", "_order"])


def pick_validation(annotated: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, float]:
    """The annotated rows that grade, and the hash threshold of the validation side.

    Rows hashed below the threshold (``fraction``, lowered by the cap), topped up in hash order to
    ``MIN_VALIDATION_EXAMPLES`` and to one row of each label, at most ``MAX_VALIDATION_EXAMPLES``.
    Everything is decided by hash order, so it never depends on the run or on the row order."""
    ordered = annotated.sort_values(["_u", "_key"], kind="stable")
    threshold = fraction
    while True:
        natural = ordered[ordered["_u"] < threshold]
        extra = ordered[ordered["_u"] >= threshold].iloc[: max(0, MIN_VALIDATION_EXAMPLES - len(natural))]
        chosen = pd.concat([natural, extra])
        covered = set(chosen["label"])
        promoted = ordered[~ordered.index.isin(chosen.index) & ~ordered["label"].isin(covered)]
        promoted = promoted.drop_duplicates("label", keep="first")  # each missing label's smallest hash
        if len(chosen) + len(promoted) <= MAX_VALIDATION_EXAMPLES or len(natural) <= MIN_VALIDATION_EXAMPLES:
            break
        keep = max(MIN_VALIDATION_EXAMPLES, MAX_VALIDATION_EXAMPLES - len(promoted))
        threshold = float(ordered["_u"].iloc[keep])  # drop the largest hashes: the first `keep` rows stay
    validation = pd.concat([chosen, promoted])
    return annotated.loc[sorted(validation.index)], threshold


def build_training_set(
    real: pd.DataFrame, synthetic: pd.DataFrame, config: RoutingConfig, seed: int = 0
) -> TrainingSet:
    """Blend labeled real examples (provenance human/llm/router) with synthetic ones and split."""
    notes: list[str] = []
    real = dedupe_by_precedence(real.assign(_key=real["query"].map(normalize_query)))
    real = real.assign(_u=[split_hash(key, seed) for key in real["_key"]])
    plan = blend_plan(len(real), config)

    annotated = real[real["provenance"].isin(ANNOTATED)]
    if len(annotated) >= MIN_VALIDATION_EXAMPLES:
        # Cold start trains on no real example: every annotation may grade.
        fraction = 1.0 if plan.strategy == "synthetic_only" else VALIDATION_FRACTION
        validation, threshold = pick_validation(annotated, fraction)
        validation_source = "real"
    else:
        validation, threshold = annotated.iloc[0:0], VALIDATION_FRACTION
        validation_source = f"none ({len(annotated)} annotated < {MIN_VALIDATION_EXAMPLES})"
        notes.append(
            f"only {len(annotated)} human/LLM-annotated examples (< {MIN_VALIDATION_EXAMPLES}): no validation "
            "split, a candidate cannot be graded (the router's own answers never grade)"
        )
    # The validation side of the hash is never taught, annotated yet or not.
    held_out = real[(real["_u"] < threshold) & ~real.index.isin(validation.index)]
    train_real = real.drop(index=validation.index.union(held_out.index))
    train_real = train_real[~train_real["_key"].isin(set(validation["_key"]))]
    if len(held_out) and plan.strategy != "synthetic_only":
        notes.append(
            f"{len(held_out)} examples on the validation side of the split are not trained on (graded once annotated)"
        )

    if plan.strategy == "synthetic_only":
        train_real = train_real.iloc[0:0]
    if len(train_real) > REPLAY_BUFFER_SIZE:
        notes.append(f"experience replay kept {REPLAY_BUFFER_SIZE} of {len(train_real)} real training examples")
        train_real = replay_sample(train_real, REPLAY_BUFFER_SIZE, seed)

    synthetic = (
        synthetic.assign(_key=synthetic["query"].map(normalize_query)) if len(synthetic) else synthetic.assign(_key=[])
    )
    synthetic = synthetic[~synthetic["_key"].isin(set(real["_key"]))].drop_duplicates("_key")
    if plan.strategy == "hybrid":
        wanted = synthetic_count_for_ratio(len(train_real), config.synthetic_data_ratio)
        if len(synthetic) < wanted:
            notes.append(
                f"only {len(synthetic)} of {wanted} synthetic examples available: the synthetic fraction is "
                "below the configured ratio"
            )
        synthetic = stratified_pick(synthetic, min(wanted, len(synthetic)), seed) if len(synthetic) else synthetic
    elif plan.strategy == "pure_real":
        synthetic = synthetic.iloc[0:0]

    if validation.empty and plan.strategy == "synthetic_only" and len(synthetic) >= 2 * MIN_VALIDATION_EXAMPLES:
        # Too few annotations to grade: the only possible grader is held-out synthetic data. Say so;
        # the promotion decision refuses to promote on it.
        validation = stratified_pick(
            synthetic, validation_size(len(synthetic) * 4) // 4 or MIN_VALIDATION_EXAMPLES, seed
        )
        synthetic = synthetic.drop(index=validation.index)
        validation_source = f"synthetic ({len(annotated)} annotated < {MIN_VALIDATION_EXAMPLES})"
        notes.append(
            "validation is synthetic because the tenant has too few annotated real examples: "
            "a candidate graded on it is never promoted automatically"
        )

    helpers = ["_key", "_u"]
    train = pd.concat([train_real, synthetic], ignore_index=True).drop(columns=helpers, errors="ignore")
    validation = validation.drop(columns=helpers, errors="ignore").reset_index(drop=True)
    return TrainingSet(plan, train, validation, validation_source, notes)
