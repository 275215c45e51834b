"""Should we train, and with which optimizer? Features, the rules, and the XGBoost meta-model
that replaces the rules once enough measured outcomes exist.

Both weigh every feasible optimizer by expected gain against expected cost, within the tenant's
budget (``max_optimization_lm_calls``, ``max_optimization_seconds``): an optimizer expected to
exceed either is not a candidate, and among the rest the plan takes the best
``gain − COST_WEIGHT · ln(1 + LM calls)``. The plan lists every optimizer it weighed and why.

Rules (cold start, and the fallback): fewer than ``MIN_TRAIN_EXAMPLES`` training examples → skip;
fewer than ``MIN_VALIDATION_EXAMPLES`` (annotated) validation examples to grade on → skip;
deployed module already at ``SKIP_ACCURACY`` on validation → skip; otherwise expected gains are the
measured means of ``bench/optimizers.py`` and ``bench/label_calibration.py`` (``prior_gain``,
docs/benchmarks.md) and costs follow ``expected_lm_calls``. ``preferred_optimizer`` overrides the
choice but not the budget. ``calibrated`` and ``calibrated_state`` are weighed only for a module
with a measured gain for them (``CALIBRATED_PRIOR_GAIN``), only when the student is the local model
(``LaneContext``), and ``calibrated_state`` only above its probe's data floor.

Meta-model: two XGBoost regressors over (features, optimizer) trained on the history of plans and
their measured outcomes across all tenants — validation gain, and log LM calls. They replace the
priors; the budget and the utility rule stay the same.

The distilled fast path (``fast_path.py``) is not a candidate: it costs no LM call and is trained
beside whichever optimizer is chosen.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from cogniverse_assets.blending import MIN_VALIDATION_EXAMPLES
from cogniverse_assets.modules.calibrated import FIT_EXAMPLES, MIN_FIT_EXAMPLES, STATE_PROBE_EXAMPLES
from cogniverse_assets.modules.label_classifier import MIN_LABELED
from cogniverse_assets.optimizers import CALIBRATED_OPTIMIZERS, DEMO_OPTIMIZERS, OPTIMIZERS, SIMBA_BATCH_SIZE
from cogniverse_resources.tenant import RoutingConfig

MIN_TRAIN_EXAMPLES = 8
SKIP_ACCURACY = 0.98
LOW_ACCURACY = 0.5
BOOTSTRAP_MAX = 50
MIPRO_MAX = 200
MIN_HISTORY_FOR_META_MODEL = 20
MIN_OUTCOMES_PER_OPTIMIZER = 3
MIN_EXPECTED_GAIN = 0.005
COST_WEIGHT = 0.01  # gain points one e-fold of LM calls is worth
SECONDS_PER_LM_CALL = 2.0  # the local 0.5B LM on 2 cores; compile seconds are estimated from calls
DEMO_COMPILE_SECONDS = 5.0  # fitting TF-IDF and choosing demos: no LM call
# Held-out gains over unoptimized measured by bench/optimizers.py (docs/benchmarks.md): the rules'
# expectation until the meta-model has measured outcomes of its own. knn and labeled: seed 0, 130
# examples, corpus eval, except that knn takes its external-holdout gain (-0.113, interval below
# zero) because retrieval hurts under shift; the DSPy optimizers: means of 3 seeds, 60 examples.
PRIOR_GAIN = {"knn": -0.113, "labeled": 0.015, "bootstrap": 0.042, "mipro": 0.033, "simba": 0.075, "gepa": 0.008}
# calibrated, per module (bench/optimizers.py, served, fitted on 50 examples, 3 seeds): routing
# the mean corpus gain with the classifier's vote, its shift shrunk to the gate's class-recall rule
# (2026-12-08: +0.172, every seed passing the gate; +0.205 unshrunk, blocked on two seeds); modality,
# like knn, its mean external-holdout gain (shrunk too), because the bias fits the tenant's label
# mix and costs accuracy under shift (seed 2: -0.070).
# calibrated_state, routing only (the registry's ``calibration_reads_state``): its mean corpus gain
# served in process (bench/optimizers.py, probe on 130 examples, 3 seeds, 2026-12-07).
CALIBRATED_PRIOR_GAIN = {
    "calibrated": {"routing": 0.172, "modality": -0.019},
    "calibrated_state": {"routing": 0.274},
}
# One scored pass of the local model (no generation): calibrated 38.7 s for 50, calibrated_state
# 92–99 s for 130 (bench/optimizers.py), plus loading the model.
SECONDS_PER_SCORED_PASS = 0.8

FEATURE_NAMES = [
    "real_count",
    "synthetic_count",
    "train_count",
    "validation_count",
    "label_entropy",
    "annotation_agreement",
    "mean_confidence",
    "deployed_accuracy",
    "hours_since_training",
    "mean_past_gain",
]
PREFERENCE_TO_OPTIMIZER = {name: name for name in OPTIMIZERS}


@dataclass
class Plan:
    decision: str  # "train" | "skip"
    optimizer: str | None
    source: str  # "rules" | "meta_model" | "preferred_optimizer"
    reasons: list[str]
    features: dict[str, float]
    # Every optimizer weighed: expected gain, LM calls, seconds, within budget, utility.
    predictions: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def label_entropy(labels: pd.Series) -> float:
    counts = Counter(labels)
    total = sum(counts.values())
    return -sum((n / total) * math.log2(n / total) for n in counts.values()) if total else 0.0


def compute_features(
    traces: pd.DataFrame,
    training_set: pd.DataFrame,
    history: pd.DataFrame | None,
    tenant_id: str,
    module: str,
    hours_since_training: float | None,
) -> dict[str, float]:
    """Plan features. The deployed module's validation accuracy comes from the answers it gave in
    production (the spans' router labels), so planning costs no LM call."""
    train = training_set[training_set["split"] == "train"]
    validation = training_set[training_set["split"] == "validation"]
    real = traces[traces["provenance"].isin(["human", "llm", "router"])]
    annotated = traces[traces["provenance"].isin(["human", "llm"])]
    agreement = float((annotated["router_label"] == annotated["label"]).mean()) if len(annotated) else float("nan")
    deployed = traces.set_index("span_id")["router_label"] if len(traces) else pd.Series(dtype=object)
    graded = validation.dropna(subset=["span_id"])
    graded = graded[graded["span_id"].isin(deployed.index)]
    deployed_accuracy = (
        float((graded["span_id"].map(deployed) == graded["label"]).mean()) if len(graded) else float("nan")
    )
    past = (
        history[(history["tenant_id"] == tenant_id) & (history["module"] == module)]["gain"].dropna()
        if history is not None and len(history) and "gain" in history
        else pd.Series(dtype=float)
    )
    confidence = pd.to_numeric(real["confidence"], errors="coerce") if len(real) else pd.Series(dtype=float)
    return {
        "real_count": float(len(real)),
        "synthetic_count": float((train["provenance"] == "synthetic").sum()),
        "train_count": float(len(train)),
        "validation_count": float(len(validation)),
        "label_entropy": label_entropy(train["label"]),
        "annotation_agreement": agreement,
        "mean_confidence": float(confidence.mean()) if len(confidence.dropna()) else float("nan"),
        "deployed_accuracy": deployed_accuracy,
        "hours_since_training": float(hours_since_training) if hours_since_training is not None else float("nan"),
        "mean_past_gain": float(past.mean()) if len(past) else float("nan"),
    }


def training_fingerprint(training_set: pd.DataFrame) -> str:
    """Identifies the training data: the same train + validation rows give the same fingerprint."""
    import hashlib

    rows = training_set[["split", "query", "label"]].astype(str).agg("\x1f".join, axis=1)
    return hashlib.sha256("\x1e".join(sorted(rows)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LaneContext:
    """What a plan needs to know about its lane besides the features: which module it trains, and
    whether the student LM is the local model (``calibrated`` fits the local tokenizer's ids)."""

    module: str | None = None
    local_student: bool = True

    def can_calibrate(self, optimizer: str) -> bool:
        return self.local_student and self.module in CALIBRATED_PRIOR_GAIN[optimizer]


def prior_gain(optimizer: str, lane: LaneContext) -> float:
    return (
        CALIBRATED_PRIOR_GAIN[optimizer][lane.module] if optimizer in CALIBRATED_OPTIMIZERS else PRIOR_GAIN[optimizer]
    )


def _calibration_floor(optimizer: str) -> int:
    return MIN_LABELED if optimizer == "calibrated_state" else MIN_FIT_EXAMPLES


def _calibration_feasible(optimizer: str, train_count: float, lane: LaneContext) -> bool:
    return lane.can_calibrate(optimizer) and train_count >= _calibration_floor(optimizer)


def feasible_optimizers(features: dict[str, float], lane: LaneContext = LaneContext()) -> list[str]:
    """SIMBA needs a full batch; ``calibrated`` and ``calibrated_state`` enough examples to fit on,
    a module they were measured on and the local model."""
    return [
        name
        for name in OPTIMIZERS
        if (name != "simba" or features["train_count"] >= SIMBA_BATCH_SIZE)
        and (name not in CALIBRATED_OPTIMIZERS or _calibration_feasible(name, features["train_count"], lane))
    ]


def expected_lm_calls(optimizer: str, train_count: float, max_iterations: int) -> float:
    """LM calls one compile is expected to make, from the calls measured in bench/optimizers.py."""
    n = max(0.0, float(train_count))
    if optimizer in DEMO_OPTIMIZERS:
        return 0.0
    if optimizer == "calibrated":
        return min(n, FIT_EXAMPLES)  # one forward pass per fit example
    if optimizer == "calibrated_state":
        return min(n, STATE_PROBE_EXAMPLES)  # one forward pass per example the probe is trained on
    if optimizer == "bootstrap":
        return min(n, 12.0)  # stops after 4 bootstrapped demos; 6–12 calls measured
    if optimizer == "mipro":
        return 60.0 + 2.0 * n  # 155 calls at 60 examples, 319 at 130
    if optimizer == "simba":
        return 280.0 * max(1, min(4, max_iterations // 25))  # 280 calls per step measured
    return 1.15 * max(n, 2.0 * max_iterations)  # GEPA: max_metric_calls plus reflection


def expected_seconds(optimizer: str, lm_calls: float) -> float:
    if optimizer in DEMO_OPTIMIZERS:
        return DEMO_COMPILE_SECONDS
    return lm_calls * (SECONDS_PER_SCORED_PASS if optimizer in CALIBRATED_OPTIMIZERS else SECONDS_PER_LM_CALL)


def weigh(config: RoutingConfig, gains: dict[str, float], calls: dict[str, float]) -> dict[str, dict[str, float]]:
    """Each optimizer's expected gain, cost and utility, and whether it fits the tenant's budget."""
    weighed = {}
    for name, gain in gains.items():
        seconds = expected_seconds(name, calls[name])
        fits = calls[name] <= config.max_optimization_lm_calls and seconds <= config.max_optimization_seconds
        weighed[name] = {
            "gain": round(float(gain), 4),
            "lm_calls": round(float(calls[name]), 1),
            "seconds": round(seconds, 1),
            "within_budget": float(fits),
            "utility": round(float(gain - COST_WEIGHT * math.log1p(calls[name])), 4),
        }
    return weighed


def choose(
    features: dict[str, float], config: RoutingConfig, source: str, weighed: dict[str, dict[str, float]]
) -> Plan:
    """The best-utility optimizer within budget, or a skip that says why."""
    affordable = {name: figures for name, figures in weighed.items() if figures["within_budget"]}
    budget = f"budget of {config.max_optimization_lm_calls} LM calls / {config.max_optimization_seconds} s"
    if not affordable:
        return Plan("skip", None, source, [f"no optimizer is expected to fit the {budget}"], features, weighed)
    best = max(affordable, key=lambda name: (affordable[name]["utility"], -affordable[name]["lm_calls"]))
    chosen = affordable[best]
    if chosen["gain"] < MIN_EXPECTED_GAIN:
        reason = f"{source}: at most {chosen['gain']:+.3f} expected gain within the {budget} (< {MIN_EXPECTED_GAIN})"
        return Plan("skip", None, source, [reason], features, weighed)
    reasons = [
        f"{source}: {best} has the best expected gain per cost ({chosen['gain']:+.3f}, ~{chosen['lm_calls']:.0f} LM "
        f"calls, ~{chosen['seconds']:.0f} s) within the {budget}"
    ]
    over = sorted(name for name, figures in weighed.items() if not figures["within_budget"])
    if over:
        reasons.append(f"over budget: {', '.join(over)}")
    return Plan("train", best, source, reasons, features, weighed)


def _hard_limits(features: dict[str, float], config: RoutingConfig, lane: LaneContext) -> Plan | None:
    """Skips and preferences that no expectation overrides."""
    n = int(features["train_count"])
    accuracy = features["deployed_accuracy"]
    if n < MIN_TRAIN_EXAMPLES:
        return Plan("skip", None, "rules", [f"{n} training examples < {MIN_TRAIN_EXAMPLES}"], features)
    graders = features.get("validation_count", float("nan"))
    if not math.isnan(graders) and graders < MIN_VALIDATION_EXAMPLES:
        reason = f"{int(graders)} annotated validation examples < {MIN_VALIDATION_EXAMPLES}: cannot grade a candidate"
        return Plan("skip", None, "rules", [reason], features)
    if config.preferred_optimizer != "auto":
        return _preferred_plan(features, config, lane)
    if not math.isnan(accuracy) and accuracy >= SKIP_ACCURACY:
        return Plan(
            "skip", None, "rules", [f"deployed accuracy {accuracy:.3f} >= {SKIP_ACCURACY}: nothing to gain"], features
        )
    return None


def _preferred_plan(features: dict[str, float], config: RoutingConfig, lane: LaneContext) -> Plan:
    optimizer = PREFERENCE_TO_OPTIMIZER[config.preferred_optimizer]
    n = int(features["train_count"])
    if optimizer not in feasible_optimizers(features, lane):
        reason = (
            f"preferred {optimizer} needs one of the modules {', '.join(CALIBRATED_PRIOR_GAIN[optimizer])}, the "
            f"local model as student and >= {_calibration_floor(optimizer)} training examples, have {n}"
            if optimizer in CALIBRATED_OPTIMIZERS
            else f"preferred {optimizer} needs >= {SIMBA_BATCH_SIZE} training examples, have {n}"
        )
        return Plan("skip", None, "preferred_optimizer", [reason], features)
    calls = expected_lm_calls(optimizer, n, config.max_training_iterations)
    weighed = weigh(config, {optimizer: prior_gain(optimizer, lane)}, {optimizer: calls})
    if not weighed[optimizer]["within_budget"]:
        reason = (
            f"preferred {optimizer} expects ~{calls:.0f} LM calls / ~{weighed[optimizer]['seconds']:.0f} s, over "
            f"the budget of {config.max_optimization_lm_calls} LM calls / {config.max_optimization_seconds} s: "
            "raise max_optimization_lm_calls and max_optimization_seconds to run it"
        )
        return Plan("skip", None, "preferred_optimizer", [reason], features, weighed)
    return Plan("train", optimizer, "preferred_optimizer", [f"tenant prefers {optimizer}"], features, weighed)


def rules_plan(features: dict[str, float], config: RoutingConfig, lane: LaneContext = LaneContext()) -> Plan:
    fixed = _hard_limits(features, config, lane)
    if fixed is not None:
        return fixed
    names = feasible_optimizers(features, lane)
    calls = {name: expected_lm_calls(name, features["train_count"], config.max_training_iterations) for name in names}
    gains = {name: prior_gain(name, lane) for name in names}
    return choose(features, config, "rules", weigh(config, gains, calls))


# ------------------------------------------------------------------------------ meta-model


def design_matrix(rows: pd.DataFrame) -> np.ndarray:
    """Features (NaN where unknown; XGBoost handles missing values) + one-hot optimizer."""
    base = rows.reindex(columns=FEATURE_NAMES).astype(float).to_numpy()
    onehot = np.stack([(rows["optimizer"] == name).astype(float).to_numpy() for name in OPTIMIZERS], axis=1)
    return np.concatenate([base, onehot], axis=1)


def outcome_rows(history: pd.DataFrame | None) -> pd.DataFrame:
    if history is None or history.empty or "gain" not in history:
        return pd.DataFrame()
    return history.dropna(subset=["gain", "optimizer"]).reset_index(drop=True)


@dataclass
class MetaModel:
    gain_model: object
    cost_model: object
    trained_on: int
    # Measured outcomes per optimizer: the model only weighs optimizers it has seen often enough.
    outcomes_per_optimizer: dict[str, int] = field(default_factory=dict)

    @classmethod
    def fit(cls, history: pd.DataFrame, seed: int = 0) -> "MetaModel":
        import xgboost as xgb

        rows = outcome_rows(history)
        x = design_matrix(rows)
        params = {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.1, "random_state": seed, "n_jobs": 1}
        gain_model = xgb.XGBRegressor(**params).fit(x, rows["gain"].astype(float))
        cost_model = xgb.XGBRegressor(**params).fit(x, np.log1p(rows["lm_calls"].astype(float)))
        counts = {str(name): int(n) for name, n in rows["optimizer"].value_counts().items()}
        return cls(gain_model, cost_model, len(rows), counts)

    def known_optimizers(self, features: dict[str, float], lane: LaneContext = LaneContext()) -> list[str]:
        return [
            name
            for name in feasible_optimizers(features, lane)
            if self.outcomes_per_optimizer.get(name, 0) >= MIN_OUTCOMES_PER_OPTIMIZER
        ]

    def predict(self, features: dict[str, float], optimizers: list[str]) -> dict[str, dict[str, float]]:
        rows = pd.DataFrame([{**features, "optimizer": name} for name in optimizers])
        x = design_matrix(rows)
        gains = self.gain_model.predict(x)
        log_calls = self.cost_model.predict(x)
        return {
            name: {"gain": float(gain), "lm_calls": float(np.expm1(cost)), "utility": float(gain - COST_WEIGHT * cost)}
            for name, gain, cost in zip(optimizers, gains, log_calls)
        }

    def plan(self, features: dict[str, float], config: RoutingConfig, lane: LaneContext = LaneContext()) -> Plan:
        fixed = _hard_limits(features, config, lane)
        if fixed is not None:
            return fixed  # hard limits and explicit preferences are not the model's call
        known = self.known_optimizers(features, lane)
        if not known:
            plan = rules_plan(features, config, lane)
            plan.reasons.append("the meta-model has no outcomes of a feasible optimizer yet: the rules decided")
            return plan
        predictions = self.predict(features, known)
        gains = {name: figures["gain"] for name, figures in predictions.items()}
        calls = {name: max(0.0, figures["lm_calls"]) for name, figures in predictions.items()}
        return choose(features, config, "meta_model", weigh(config, gains, calls))

    def to_json(self) -> dict:
        return {
            "gain_model": json.loads(self.gain_model.get_booster().save_raw("json").decode()),
            "cost_model": json.loads(self.cost_model.get_booster().save_raw("json").decode()),
            "trained_on": self.trained_on,
            "outcomes_per_optimizer": self.outcomes_per_optimizer,
            "feature_names": FEATURE_NAMES + [f"optimizer={name}" for name in OPTIMIZERS],
        }

    @classmethod
    def from_json(cls, payload: dict) -> "MetaModel":
        """The stored model; ``ValueError`` when it was trained on other features or optimizers."""
        import xgboost as xgb

        if payload.get("feature_names") != FEATURE_NAMES + [f"optimizer={name}" for name in OPTIMIZERS]:
            raise ValueError("stored meta-model was trained on other features or optimizers; it must be retrained")

        models = []
        for key in ("gain_model", "cost_model"):
            model = xgb.XGBRegressor()
            model.load_model(bytearray(json.dumps(payload[key]).encode()))
            models.append(model)
        counts = {str(name): int(n) for name, n in (payload.get("outcomes_per_optimizer") or {}).items()}
        return cls(models[0], models[1], int(payload["trained_on"]), counts)

    def feature_importance(self) -> dict[str, float]:
        names = FEATURE_NAMES + [f"optimizer={name}" for name in OPTIMIZERS]
        return {name: round(float(value), 4) for name, value in zip(names, self.gain_model.feature_importances_)}
