"""``calibrated``: the unoptimized module with its label prior corrected by a per-label bias.

A 0.5B model leans towards some labels whatever the query (routing: video_search_agent and
detailed_report_agent over image_search_agent and summarizer_agent; modality: video and text over
audio). Compiling scores the module's own prompt on at most ``FIT_EXAMPLES`` gold-labeled training
examples (one forward pass each, ``LocalLabelScorer``) and fits one number per label: the shift of
the label log-probabilities that maximizes the gold labels' likelihood. Serving passes the shift
as ``logit_bias`` on the labels' first tokens, so the schema-constrained answer is the argmax of
the shifted scores at no extra cost per call. Measured in docs/benchmarks.md ("Label scores with a
per-label bias").

Where the registry says so (``calibration_adds_classifier``: routing), the tenant's label classifier
(``label_classifier.py``, trained on the same gold labels) votes too: the served shift is
``bias + weight * log p_classifier(label | query)``, with bias and weight fitted together on the
same examples, using the classifier's out-of-fold probabilities for them so the weight reflects
how it does on queries it has not seen. Below the classifier's data floor the bias is served alone
and the parameters say why.

The fitted shift maximizes accuracy over the labels' mix, and can take a label's recall away to
give more to others, which the promotion gate refuses beyond the tenant's
``promotion_max_class_recall_drop`` (and which costs most where that label dominates the traffic:
docs/benchmarks.md, "The bias when the traffic's label mix is not the labels'"). So ``calibrated``
serves the fitted shift times the largest ``SHRINK_STEPS`` factor that keeps every label's recall
on the fit examples within that drop of the unoptimized answers' (read from the same scores: no
LM call); the parameters record the factor.

``calibrated_state`` (where the registry says so: routing) replaces the classifier's vote by a
linear probe on the local LM's own hidden state at the scored position (``state_probe.py``),
trained on up to ``STATE_PROBE_EXAMPLES`` gold-labeled training examples (one pass each, the label
scores read in the same pass), with bias and weight fitted as above on the probe's out-of-fold
probabilities for the ``FIT_EXAMPLES``. The stack's server returns no hidden state, so such a module
answers in process: one pass of the local model (``shared_scorer``, loaded once per process), the
argmax of ``scores + bias + weight * log p_probe``, no generation. Below the probe's data floor (the
classifier's: 50 gold examples, 5 per label, every label) it is compiled as ``calibrated`` and its
parameters say why.

Only modules whose one output field is the label can be calibrated this way (modality, routing):
cross_modal writes ``needs_fusion`` before its label. The token ids belong to the local model's
tokenizer; the state records the model, and ``forward`` refuses another one rather than shift
unrelated tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import dspy
import numpy as np
import pandas as pd

from cogniverse_assets.blending import stratified_pick
from cogniverse_assets.modules.demos import gold_frame, gold_rows
from cogniverse_assets.modules.label_classifier import (
    LabelClassifier,
    out_of_fold_probabilities,
    softmax_rows,
    untrainable_reason,
)
from cogniverse_assets.modules.state_probe import StateProbe, fit_with_chosen_regularization
from cogniverse_assets.modules.text_features import feature_text
from cogniverse_resources.label_scorer import LocalLabelScorer, log_normalized, shared_scorer
from cogniverse_resources.lm import LlamaCppJSONAdapter, checked_layout
from cogniverse_resources.tenant import DEFAULT_PROMOTION_MAX_CLASS_RECALL_DROP

if TYPE_CHECKING:  # the registry loads these programs, so it cannot be imported here at run time
    from cogniverse_assets.modules.registry import RoutingModuleSpec

FIT_EXAMPLES = 50
STATE_PROBE_EXAMPLES = 130
MIN_FIT_EXAMPLES = 10
FIT_STEPS = 2000
# Keeps log p finite where the classifier gives a label no chance.
PROBABILITY_FLOOR = 1e-9
SHRINK_STEPS = tuple(round(1 - tenth / 10, 1) for tenth in range(11))  # 1.0, 0.9, ..., 0.0


def can_calibrate(spec: RoutingModuleSpec) -> bool:
    return list(spec.signature.output_fields) == [spec.label_field]


def vote_unavailable(spec: RoutingModuleSpec, labels: list[str]) -> str | None:
    """Why a vote (the classifier's or the state probe's) cannot be trained on these gold labels:
    the classifier's data floor, or a label of the module with no example; None when it can."""
    missing = sorted(set(spec.labels) - set(labels))
    return untrainable_reason(labels) or (f"no examples of {', '.join(missing)}" if missing else None)


def state_probe_unavailable(spec: RoutingModuleSpec, labels: list[str]) -> str | None:
    """Why a state probe cannot be trained on these gold labels, or None when it can."""
    if not spec.calibration_reads_state:
        return f"{spec.name}'s registry entry does not read the LM's state"
    return vote_unavailable(spec, labels)


def answer_prefix(spec: RoutingModuleSpec) -> str:
    """How the schema-constrained JSON answer begins, up to the label (llama.cpp's grammar output)."""
    return '{ "' + spec.label_field + '": "'


def fit_bias(scores: np.ndarray, labels: list[str], label_order: tuple[str, ...]) -> np.ndarray:
    """Per-label shift b maximizing the mean log-likelihood of softmax(scores + b) at the gold
    labels, centred on zero. The objective is concave in b, so gradient ascent finds its maximum."""
    target = np.array([[label == gold for label in label_order] for gold in labels], dtype=float)
    bias = np.zeros(len(label_order))
    for _ in range(FIT_STEPS):
        bias += 0.5 * (target - np.exp(log_normalized(scores + bias))).mean(axis=0)
    return bias - bias.mean()


def fit_bias_and_weight(
    scores: np.ndarray, classifier_log_probabilities: np.ndarray, labels: list[str], label_order: tuple[str, ...]
) -> tuple[np.ndarray, float]:
    """Per-label shift b and classifier weight w >= 0 maximizing the mean log-likelihood of
    softmax(scores + b + w * classifier_log_probabilities) at the gold labels; b centred on zero.
    Still concave (the logits are linear in b and w), so projected gradient ascent finds the maximum."""
    target = np.array([[label == gold for label in label_order] for gold in labels], dtype=float)
    bias, weight = np.zeros(len(label_order)), 0.0
    for _ in range(FIT_STEPS):
        residual = target - np.exp(log_normalized(scores + bias + weight * classifier_log_probabilities))
        bias += 0.5 * residual.mean(axis=0)
        weight = max(0.0, weight + 0.2 * float((residual * classifier_log_probabilities).sum(axis=1).mean()))
    return bias - bias.mean(), weight


def recall_drops_within(scores: np.ndarray, shift: np.ndarray, gold: np.ndarray, max_drop: float) -> bool:
    """Whether adding ``shift`` to ``scores`` loses no label more than ``max_drop`` recall on these
    examples (``gold``: label indices), against the unshifted answers."""
    before = scores.argmax(axis=1) == gold
    after = (scores + shift).argmax(axis=1) == gold
    return all(before[gold == label].mean() - after[gold == label].mean() <= max_drop + 1e-9 for label in set(gold))


def shrink_to_gate(scores: np.ndarray, shift: np.ndarray, gold: np.ndarray, max_drop: float) -> float:
    """The largest ``SHRINK_STEPS`` factor t for which ``t * shift`` keeps every label's recall on
    these examples within ``max_drop`` of the unshifted answers' (t = 0 always does)."""
    return next(t for t in SHRINK_STEPS if recall_drops_within(scores, t * shift, gold, max_drop))


def log_votes(probabilities: np.ndarray, classes: list[str], label_order: tuple[str, ...]) -> np.ndarray:
    """Classifier probabilities (columns in ``classes`` order) as log-probabilities in ``label_order``."""
    columns = [classes.index(label) for label in label_order]
    return np.log(probabilities[:, columns] + PROBABILITY_FLOOR)


def classifier_log_probabilities(
    classifier: LabelClassifier, inputs_list: list[Mapping[str, object]], label_order: tuple[str, ...]
) -> np.ndarray:
    probabilities = classifier.probabilities([feature_text(inputs) for inputs in inputs_list])
    return log_votes(probabilities, classifier.classes, label_order)


class CalibratedLabels(dspy.Module):
    """One ``Predict`` over the signature, called with a per-label ``logit_bias``."""

    def __init__(
        self,
        spec: RoutingModuleSpec,
        bias: Mapping[str, float],
        label_tokens: Mapping[str, int],
        model: str,
        classifier: LabelClassifier | None = None,
        classifier_weight: float = 0.0,
        state_probe: StateProbe | None = None,
        state_weight: float = 0.0,
        prompt_layout: str = "reminder_last",
    ):
        super().__init__()
        if not can_calibrate(spec):
            raise ValueError(
                f"{spec.name} writes {list(spec.signature.output_fields)}: only a lone label can be calibrated"
            )
        self.spec = spec
        self.predict = spec.program()
        self.bias = {label: float(bias[label]) for label in spec.labels}
        self.label_tokens = {label: int(label_tokens[label]) for label in spec.labels}
        self.model = model
        if classifier is not None and set(classifier.classes) != set(spec.labels):
            raise ValueError(f"{spec.name}: the classifier knows {classifier.classes}, the module {list(spec.labels)}")
        self.classifier = classifier
        self.classifier_weight = float(classifier_weight) if classifier is not None else 0.0
        if state_probe is not None and set(state_probe.classes) != set(spec.labels):
            raise ValueError(
                f"{spec.name}: the state probe knows {state_probe.classes}, the module {list(spec.labels)}"
            )
        if state_probe is not None and classifier is not None:
            raise ValueError(f"{spec.name}: one vote beside the bias, the classifier's or the LM state's")
        self.state_probe = state_probe
        self.state_weight = float(state_weight) if state_probe is not None else 0.0
        # The prompt the state was read from; an in-process answer formats its query the same way.
        self.prompt_layout = checked_layout(prompt_layout)
        self._adapter = LlamaCppJSONAdapter(layout=self.prompt_layout)
        self._fixed_prefix: int | None = None

    @classmethod
    def compile(
        cls,
        spec: RoutingModuleSpec,
        train: pd.DataFrame,
        scorer: LocalLabelScorer,
        adapter: dspy.Adapter,
        model: str,
        seed: int = 0,
        read_state: bool = False,
        max_class_recall_drop: float = DEFAULT_PROMOTION_MAX_CLASS_RECALL_DROP,
    ) -> tuple["CalibratedLabels", dict]:
        """``calibrated`` (``read_state`` False) or ``calibrated_state``, fitted on ``train``'s gold rows;
        ``calibrated``'s shift shrunk to keep within ``max_class_recall_drop`` (the tenant's gate)."""
        gold = gold_frame(train)
        if len(gold) < MIN_FIT_EXAMPLES:
            raise ValueError(
                f"{spec.name}: {len(gold)} gold-labeled training examples < {MIN_FIT_EXAMPLES} to fit a bias on"
            )
        state_note = state_probe_unavailable(spec, [str(label) for label in gold["label"]]) if read_state else None
        if read_state and state_note is None:
            return cls._compile_with_state(spec, gold, scorer, adapter, model, seed)
        fit_frame = stratified_pick(gold, FIT_EXAMPLES, seed=seed)
        rows = gold_rows(spec, fit_frame)
        tokens = scorer.first_tokens(spec.labels)
        prefix = answer_prefix(spec)
        scores = np.array(
            [scorer.scores(adapter.format(spec.signature, [], row["inputs"]), prefix, tokens) for row in rows]
        )
        labels = [row["label"] for row in rows]
        classifier, weight, vote = None, 0.0, np.zeros_like(scores)
        classifier_note = "not used for this module"
        if spec.calibration_adds_classifier:
            classifier, vote, classifier_note = classifier_and_fit_votes(spec, gold, fit_frame.index, seed)
        if classifier is None:
            bias = fit_bias(scores, labels, spec.labels)
        else:
            bias, weight = fit_bias_and_weight(scores, vote, labels, spec.labels)
        gold_index = np.array([spec.labels.index(label) for label in labels])
        shrink = shrink_to_gate(scores, bias + weight * vote, gold_index, max_class_recall_drop)
        bias, weight = shrink * bias, shrink * weight
        program = cls(spec, dict(zip(spec.labels, bias)), dict(zip(spec.labels, tokens)), model, classifier, weight)
        fitted = float(np.mean(scores.argmax(axis=1) == gold_index))
        shifted = float(np.mean((scores + bias + weight * vote).argmax(axis=1) == gold_index))
        parameters = {
            "fitted_on": len(rows),
            "fit_accuracy_before": round(fitted, 4),
            "fit_accuracy_after": round(shifted, 4),
            "bias": {label: round(float(value), 4) for label, value in zip(spec.labels, bias)},
            "classifier_weight": round(weight, 4),
            "classifier": classifier_note,
            "shrunk_to_gate": shrink,
            "max_class_recall_drop": max_class_recall_drop,
        }
        if read_state:
            parameters["state_probe"] = f"off: {state_note}"
        return program, parameters

    @classmethod
    def _compile_with_state(
        cls,
        spec: RoutingModuleSpec,
        gold: pd.DataFrame,
        scorer: LocalLabelScorer,
        adapter: dspy.Adapter,
        model: str,
        seed: int,
    ) -> tuple["CalibratedLabels", dict]:
        probe_frame = stratified_pick(gold, STATE_PROBE_EXAMPLES, seed=seed)
        fit_frame = stratified_pick(probe_frame, FIT_EXAMPLES, seed=seed)
        layout = getattr(adapter, "layout", "reminder_last")
        tokens = scorer.first_tokens(spec.labels)
        program = cls(
            spec, dict.fromkeys(spec.labels, 0.0), dict(zip(spec.labels, tokens)), model, prompt_layout=layout
        )
        read = [program.read(scorer, row["inputs"]) for row in gold_rows(spec, probe_frame)]
        scores, states = np.array([pair[0] for pair in read]), np.array([pair[1] for pair in read])
        probe_labels = [str(label) for label in probe_frame["label"]]
        probe, probabilities, classes, oof_accuracy = fit_with_chosen_regularization(states, probe_labels, seed)
        at_fit_rows = probe_frame.index.get_indexer(fit_frame.index)
        labels = [str(label) for label in fit_frame["label"]]
        vote = log_votes(probabilities[at_fit_rows], classes, spec.labels)
        bias, weight = fit_bias_and_weight(scores[at_fit_rows], vote, labels, spec.labels)
        program.bias = dict(zip(spec.labels, (float(value) for value in bias)))
        program.state_probe, program.state_weight = probe, weight
        gold_index = [spec.labels.index(label) for label in labels]
        before = scores[at_fit_rows].argmax(axis=1) == gold_index
        after = (scores[at_fit_rows] + bias + weight * vote).argmax(axis=1) == gold_index
        parameters = {
            "fitted_on": len(fit_frame),
            "probe_trained_on": len(probe_frame),
            "fit_accuracy_before": round(float(before.mean()), 4),
            "fit_accuracy_after": round(float(after.mean()), 4),
            "bias": {label: round(float(value), 4) for label, value in zip(spec.labels, bias)},
            "state_weight": round(weight, 4),
            "state_probe": (
                f"on: C={probe.regularization} by out-of-fold accuracy on its {len(probe_frame)} rows "
                + ", ".join(f"C={c}: {accuracy:.3f}" for c, accuracy in oof_accuracy.items())
            ),
        }
        return program, parameters

    def read(self, scorer: LocalLabelScorer, inputs: Mapping[str, object]) -> tuple[np.ndarray, np.ndarray]:
        """This query's label scores and LM state, read as this module is served."""
        adapter = self._adapter
        if self._fixed_prefix is None:
            tokens = scorer.first_tokens(self.spec.labels)
            if tokens != [self.label_tokens[label] for label in self.spec.labels]:
                raise ValueError(
                    f"{self.spec.name} was calibrated for {self.model}; {scorer.model_path} has other tokens"
                )
            sentinels = [{"query": "alpha", "entities": ["one"]}, {"query": "omega", "entities": ["two"]}]
            prompts = [adapter.format(self.spec.signature, [], self.spec.inputs(row)) for row in sentinels]
            self._fixed_prefix = scorer.fixed_prefix_length(prompts)
        messages = adapter.format(self.spec.signature, [], dict(inputs))
        tokens = [self.label_tokens[label] for label in self.spec.labels]
        return scorer.scores_and_state(messages, answer_prefix(self.spec), tokens, self._fixed_prefix)

    def state_shift(self, state: np.ndarray) -> np.ndarray:
        """bias + weight * log p_probe(label | state), in ``spec.labels`` order."""
        vote = log_votes(self.state_probe.probabilities(state), self.state_probe.classes, self.spec.labels)[0]
        return np.array([self.bias[label] for label in self.spec.labels]) + self.state_weight * vote

    def answer_in_process(self, inputs: Mapping[str, object]) -> dspy.Prediction:
        from cogniverse_resources import stack

        scores, state = self.read(shared_scorer(stack.local_model_path()), inputs)
        probabilities = softmax_rows((scores + self.state_shift(state))[None, :])[0]
        best = int(np.argmax(probabilities))
        return self.answered_in_process(self.spec, self.spec.labels[best], float(probabilities[best]))

    @staticmethod
    def answered_in_process(spec: RoutingModuleSpec, label: str, probability: float) -> dspy.Prediction:
        """``label``'s outputs, carrying the module's probability of it."""
        prediction = dspy.Prediction(**spec.outputs_for(label))
        # Private, so it is not an output field; the runtime records it as the answer's confidence.
        prediction._label_probability = probability
        return prediction

    @staticmethod
    def own_probability(prediction: dspy.Prediction) -> float | None:
        """The module's probability of its answer, where it answered in process (None otherwise)."""
        return getattr(prediction, "_label_probability", None)

    def shift(self, inputs: Mapping[str, object]) -> np.ndarray:
        """The per-label shift this query's answer gets on the server, in ``spec.labels`` order."""
        if self.state_probe is not None:
            raise ValueError(f"{self.spec.name}: its shift needs the LM's state, read in process (answer_in_process)")
        bias = np.array([self.bias[label] for label in self.spec.labels])
        if self.classifier is None:
            return bias
        vote = classifier_log_probabilities(self.classifier, [inputs], self.spec.labels)[0]
        return bias + self.classifier_weight * vote

    def logit_bias(self, inputs: Mapping[str, object]) -> dict[str, float]:
        shift = self.shift(inputs)
        return {str(self.label_tokens[label]): round(float(value), 4) for label, value in zip(self.spec.labels, shift)}

    def forward(self, **inputs):
        if self.state_probe is not None:
            return self.answer_in_process(inputs)
        lm = dspy.settings.lm
        if lm is not None and getattr(lm, "model", self.model) != self.model:
            raise ValueError(
                f"{self.spec.name} was calibrated for {self.model}; its label token ids mean nothing to {lm.model}"
            )
        return self.predict(**inputs, config={"logit_bias": self.logit_bias(inputs)})

    def dump_state(self, json_mode: bool = True) -> dict:
        state = super().dump_state(json_mode=json_mode)
        state["calibration"] = {
            "bias": self.bias,
            "label_tokens": self.label_tokens,
            "model": self.model,
            "classifier": self.classifier.to_state() if self.classifier is not None else None,
            "classifier_weight": self.classifier_weight,
            "state_probe": self.state_probe.to_state() if self.state_probe is not None else None,
            "state_weight": self.state_weight,
            "prompt_layout": self.prompt_layout,
        }
        return state

    @classmethod
    def from_state(cls, spec: RoutingModuleSpec, state: Mapping) -> "CalibratedLabels":
        calibration = state["calibration"]
        stored_classifier = calibration.get("classifier")  # absent in versions stored before it voted
        stored_probe = calibration.get("state_probe")  # absent in versions stored before the state voted
        program = cls(
            spec,
            calibration["bias"],
            calibration["label_tokens"],
            str(calibration["model"]),
            LabelClassifier.from_state(stored_classifier) if stored_classifier else None,
            float(calibration.get("classifier_weight") or 0.0),
            StateProbe.from_state(stored_probe) if stored_probe else None,
            float(calibration.get("state_weight") or 0.0),
            str(calibration.get("prompt_layout") or "reminder_last"),
        )
        program.predict.load_state(state["predict"])
        return program


def classifier_and_fit_votes(
    spec: RoutingModuleSpec, gold: pd.DataFrame, fit_index: pd.Index, seed: int
) -> tuple[LabelClassifier | None, np.ndarray, str]:
    """The classifier trained on every gold row, and its out-of-fold log-probabilities for the fit
    rows (what it says of queries it was not trained on); (None, zeros, why) below its data floor."""
    rows = gold_rows(spec, gold)
    labels = [row["label"] for row in rows]
    reason = vote_unavailable(spec, labels)
    if reason:
        return None, np.zeros((len(fit_index), len(spec.labels))), f"off: {reason}"
    texts = [feature_text(row["inputs"]) for row in rows]
    probabilities, classes = out_of_fold_probabilities(texts, labels, seed=seed)
    votes = log_votes(probabilities[gold.index.get_indexer(fit_index)], classes, spec.labels)
    return LabelClassifier.fit(texts, labels), votes, f"on: trained on {len(rows)} gold examples"
