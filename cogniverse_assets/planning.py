"""Should we train, and with which optimizer? Features, the design's rules, and the XGBoost
meta-model that replaces the rules once enough measured outcomes exist.

Rules (cold start, and the fallback): fewer than ``MIN_TRAIN_EXAMPLES`` training examples → skip;
deployed module already at ``SKIP_ACCURACY`` on validation → skip; otherwise < 50 examples →
BootstrapFewShot, 50–200 → MIPROv2, > 200 → GEPA, and SIMBA when the deployed accuracy is low
(< ``LOW_ACCURACY``) and the set is large enough for its batch. ``preferred_optimizer`` overrides.

Meta-model: two XGBoost regressors over (features, optimizer) trained on the history of plans and
their measured outcomes across all tenants — validation gain, and log LM calls. For each feasible
optimizer it predicts gain and cost; it trains the one with the best gain per cost if the best
predicted gain reaches ``MIN_EXPECTED_GAIN``, and skips otherwise.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from cogniverse_resources.tenant import RoutingConfig
from cogniverse_assets.optimizers import OPTIMIZERS, SIMBA_BATCH_SIZE

MIN_TRAIN_EXAMPLES = 8
SKIP_ACCURACY = 0.98
LOW_ACCURACY = 0.5
BOOTSTRAP_MAX = 50
MIPRO_MAX = 200
MIN_HISTORY_FOR_META_MODEL = 20
MIN_EXPECTED_GAIN = 0.005
COST_WEIGHT = 0.01  # gain points one e-fold of LM calls is worth

FEATURE_NAMES = [
    "real_count", "synthetic_count", "train_count", "validation_count", "label_entropy",
    "annotation_agreement", "mean_confidence", "deployed_accuracy", "hours_since_training", "mean_past_gain",
]
PREFERENCE_TO_OPTIMIZER = {"bootstrap": "bootstrap", "mipro": "mipro", "simba": "simba", "gepa": "gepa"}


@dataclass
class Plan:
    decision: str  # "train" | "skip"
    optimizer: str | None
    source: str  # "rules" | "meta_model" | "preferred_optimizer"
    reasons: list[str]
    features: dict[str, float]
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


def feasible_optimizers(features: dict[str, float]) -> list[str]:
    return [name for name in OPTIMIZERS if name != "simba" or features["train_count"] >= SIMBA_BATCH_SIZE]


def rules_plan(features: dict[str, float], config: RoutingConfig) -> Plan:
    n = int(features["train_count"])
    accuracy = features["deployed_accuracy"]
    if n < MIN_TRAIN_EXAMPLES:
        return Plan("skip", None, "rules", [f"{n} training examples < {MIN_TRAIN_EXAMPLES}"], features)
    if config.preferred_optimizer != "auto":
        optimizer = PREFERENCE_TO_OPTIMIZER[config.preferred_optimizer]
        if optimizer not in feasible_optimizers(features):
            return Plan("skip", None, "preferred_optimizer", [f"preferred {optimizer} needs >= {SIMBA_BATCH_SIZE} training examples, have {n}"], features)
        return Plan("train", optimizer, "preferred_optimizer", [f"tenant prefers {optimizer}"], features)
    if not math.isnan(accuracy) and accuracy >= SKIP_ACCURACY:
        return Plan("skip", None, "rules", [f"deployed accuracy {accuracy:.3f} >= {SKIP_ACCURACY}: nothing to gain"], features)
    if not math.isnan(accuracy) and accuracy < LOW_ACCURACY and n >= SIMBA_BATCH_SIZE:
        return Plan("train", "simba", "rules", [f"deployed accuracy {accuracy:.3f} < {LOW_ACCURACY} and {n} >= {SIMBA_BATCH_SIZE} examples"], features)
    if n < BOOTSTRAP_MAX:
        return Plan("train", "bootstrap", "rules", [f"{n} training examples < {BOOTSTRAP_MAX}"], features)
    if n <= MIPRO_MAX:
        return Plan("train", "mipro", "rules", [f"{BOOTSTRAP_MAX} <= {n} training examples <= {MIPRO_MAX}"], features)
    return Plan("train", "gepa", "rules", [f"{n} training examples > {MIPRO_MAX}"], features)


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

    @classmethod
    def fit(cls, history: pd.DataFrame, seed: int = 0) -> "MetaModel":
        import xgboost as xgb

        rows = outcome_rows(history)
        x = design_matrix(rows)
        params = {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.1, "random_state": seed, "n_jobs": 1}
        gain_model = xgb.XGBRegressor(**params).fit(x, rows["gain"].astype(float))
        cost_model = xgb.XGBRegressor(**params).fit(x, np.log1p(rows["lm_calls"].astype(float)))
        return cls(gain_model, cost_model, len(rows))

    def predict(self, features: dict[str, float], optimizers: list[str]) -> dict[str, dict[str, float]]:
        rows = pd.DataFrame([{**features, "optimizer": name} for name in optimizers])
        x = design_matrix(rows)
        gains = self.gain_model.predict(x)
        log_calls = self.cost_model.predict(x)
        return {
            name: {"gain": float(gain), "lm_calls": float(np.expm1(cost)), "utility": float(gain - COST_WEIGHT * cost)}
            for name, gain, cost in zip(optimizers, gains, log_calls)
        }

    def plan(self, features: dict[str, float], config: RoutingConfig) -> Plan:
        fallback = rules_plan(features, config)
        if fallback.decision == "skip" or fallback.source == "preferred_optimizer":
            return fallback  # hard limits and explicit preferences are not the model's call
        predictions = self.predict(features, feasible_optimizers(features))
        best = max(predictions, key=lambda name: predictions[name]["utility"])
        if predictions[best]["gain"] < MIN_EXPECTED_GAIN:
            reason = f"meta-model predicts at most {predictions[best]['gain']:+.3f} gain (< {MIN_EXPECTED_GAIN})"
            return Plan("skip", None, "meta_model", [reason], features, predictions)
        reason = f"meta-model: {best} has the best predicted gain per cost ({predictions[best]['gain']:+.3f}, ~{predictions[best]['lm_calls']:.0f} LM calls)"
        return Plan("train", best, "meta_model", [reason], features, predictions)

    def to_json(self) -> dict:
        return {
            "gain_model": json.loads(self.gain_model.get_booster().save_raw("json").decode()),
            "cost_model": json.loads(self.cost_model.get_booster().save_raw("json").decode()),
            "trained_on": self.trained_on,
            "feature_names": FEATURE_NAMES + [f"optimizer={name}" for name in OPTIMIZERS],
        }

    @classmethod
    def from_json(cls, payload: dict) -> "MetaModel":
        import xgboost as xgb

        models = []
        for key in ("gain_model", "cost_model"):
            model = xgb.XGBRegressor()
            model.load_model(bytearray(json.dumps(payload[key]).encode()))
            models.append(model)
        return cls(models[0], models[1], int(payload["trained_on"]))

    def feature_importance(self) -> dict[str, float]:
        names = FEATURE_NAMES + [f"optimizer={name}" for name in OPTIMIZERS]
        return {name: round(float(value), 4) for name, value in zip(names, self.gain_model.feature_importances_)}
