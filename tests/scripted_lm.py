"""A scripted ``DummyLM`` for pure-logic optimizer tests.

It answers every signature the optimizers use, and it never sees a gold label: for the routing
module it plays a small, fallible model that only follows what its prompt says.

1. Rules in its instruction of the form ``<words> mean <label>`` (the scripted proposers write
   ``HINT``, a keyword table that is right for many queries and wrong for some): the first query
   word that matches a rule decides.
2. Otherwise the demos in the chat: it copies the label of the demo sharing the most words with the
   query (none shared: no help).
3. Otherwise ``fallback_label``.

Sampled at a temperature above 0 with a rollout id (``lm.copy(rollout_id=..., temperature=1.0)``, as
SIMBA and BootstrapFewShot's later rounds do), one answer in three slips to a label chosen by a hash
of the rollout and the query, so rollouts of the same example differ as a real LM's do.

So whether an optimizer's change helps depends on the data it picked, not on the script, and the
tests assert what the optimizers did (which demos, which instruction, how many calls) rather than
"better". Every call is counted and every prompt kept (``lm.answers.calls``, ``lm.answers.prompts``).
"""

from __future__ import annotations

import json
import re
import zlib

import dspy
from dspy.clients.engines.dummy_engine import AsyncDummyEngine, DummyEngine
from dspy.utils import DummyLM

HINT = (
    "HINT: clips, footage and videos mean video; podcasts, recordings and calls mean audio; "
    "PDFs, papers, contracts and manuals mean document; photos, pictures and images mean image; "
    "explain and meaning mean text."
)
OBJECTIVE = "your objective is:"  # where the adapters put the instruction in the system message
_QUERY = re.compile(r"\[\[ ## query ## \]\]\n(.*?)(?:\n\n|$)", re.S)  # inputs keep ChatAdapter headers
_RULE = re.compile(r"(?P<words>[^;.:]+?)\s+means?\s+(?P<label>[a-z]+)", re.I)
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def instruction_rules(instruction: str, labels) -> list[tuple[str, str]]:
    """``(stem, label)`` for every ``<words> mean <label>`` clause of ``instruction``."""
    rules = []
    for match in _RULE.finditer(instruction):
        label = match["label"].lower()
        if label not in labels:
            continue
        for word in re.split(r",|\band\b", match["words"]):
            tokens = _words(word)
            if tokens:
                rules.append((_stem(tokens[-1]), label))
    return rules


class _RecordingEngine(DummyEngine):
    def _complete_messages(self, messages):
        answers = self.owner.answers
        answers.messages = messages
        answers.sampling = (self.owner.kwargs.get("rollout_id"), self.owner.kwargs.get("temperature") or 0.0)
        answers.calls += 1
        answers.prompts.append("\n".join(message["content"] for message in messages))
        return super()._complete_messages(messages)


class _Answers(dict):
    def __init__(self, spec, fallback_label):
        advice = '{"self": "' + HINT + '"}'
        super().__init__(
            {
                "`proposed_instruction`": {"proposed_instruction": f"Route the query. {HINT}"},
                "`new_instruction`": {"new_instruction": f"Route the query. {HINT}"},
                "`shortened_instruction`": {"shortened_instruction": f"Route. {HINT}"},
                "`observations`": {"observations": "Search queries for media."},
                "`summary`": {"summary": "Search queries."},
                "`program_description`": {"program_description": "Routes queries."},
                "`module_description`": {"module_description": "Classifies queries."},
                "`module_advice`": {"discussion": "Keyword rules help.", "module_advice": advice},
                "`discussion`": {"discussion": "Keyword rules help.", "module_advice": advice},
            }
        )
        self.spec = spec
        self.fallback_label = fallback_label
        self.messages = []
        self.sampling: tuple[object, float] = (None, 0.0)  # (rollout_id, temperature) of the current call
        self.calls = 0
        self.prompts: list[str] = []

    def route(self, messages) -> str:
        """The routing answer this model gives for ``messages`` (see the module docstring)."""
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        instruction = system.split(OBJECTIVE, 1)[1] if OBJECTIVE in system else ""
        match = _QUERY.search(messages[-1]["content"])
        query = _words(match.group(1)) if match else []
        rollout, temperature = self.sampling
        if temperature > 0 and rollout is not None:  # a sampled rollout: one answer in three is a slip
            slip = zlib.crc32(f"{rollout}|{' '.join(query)}".encode())
            if slip % 3 == 0:
                return self.spec.labels[slip // 3 % len(self.spec.labels)]
        rules = instruction_rules(instruction, self.spec.labels)
        for word in query:
            for stem, label in rules:
                if word.startswith(stem):
                    return label
        best, best_overlap = None, 0
        content = {word for word in query if len(word) > 3}
        turns = messages[1:-1]
        for user, assistant in zip(turns[::2], turns[1::2]):
            demo = _QUERY.search(user["content"])
            label = _demo_label(assistant["content"], self.spec.label_field)
            if not demo or label not in self.spec.labels:
                continue
            overlap = len(content & {word for word in _words(demo.group(1)) if len(word) > 3})
            if overlap > best_overlap:
                best, best_overlap = label, overlap
        return best or self.fallback_label

    def items(self):
        header = f"Your output fields are:\n1. `{self.spec.label_field}`"
        if self.messages and header in self.messages[0]["content"]:
            yield f"`{self.spec.label_field}`", {self.spec.label_field: self.route(self.messages)}
        yield from super().items()


def _demo_label(content: str, field: str) -> str | None:
    try:
        return json.loads(content).get(field)
    except (ValueError, AttributeError):
        found = re.search(rf'"{field}"\s*:\s*"([^"]+)"|\[\[ ## {field} ## \]\]\n(\S+)', content)
        return (found.group(1) or found.group(2)) if found else None


class ScriptedLM(DummyLM):
    """A ``DummyLM`` whose copies (``lm.copy(rollout_id=..., temperature=...)``, as MIPROv2's proposer
    and SIMBA's resampling make) answer from the same script and count in the same ``answers``."""

    def __init__(self, answers: _Answers) -> None:
        super().__init__(answers, adapter=dspy.JSONAdapter())
        self._install_engine()

    def _install_engine(self) -> None:
        self._engine_spec = _RecordingEngine(self)
        self._async_engine_spec = AsyncDummyEngine(self._engine_spec)

    def copy(self, **kwargs) -> "ScriptedLM":
        copied = super().copy(**kwargs)
        copied._install_engine()
        return copied


def scripted_lm(spec, fallback_label: str) -> ScriptedLM:
    return ScriptedLM(_Answers(spec, fallback_label))
