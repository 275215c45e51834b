"""A scripted ``DummyLM`` for pure-logic optimizer tests.

It answers every signature the optimizers use. For the routing module itself it plays a model that
only gets the right label when its prompt carries a hint — an instruction containing ``HINT`` (as
the scripted proposers write) or demos — so an optimizer that really changes the prompt measurably
improves the program, and one that changes nothing does not.
"""

from __future__ import annotations

import re

import dspy
from dspy.clients.engines.dummy_engine import DummyEngine
from dspy.utils import DummyLM

HINT = "HINT: clips and footage mean video; podcasts mean audio; PDFs mean document."
_QUERY = re.compile(r"\[\[ ## query ## \]\]\n(.*?)\n\n", re.S)  # inputs keep ChatAdapter headers


class _RecordingEngine(DummyEngine):
    def _complete_messages(self, messages):
        self.owner.answers.messages = messages
        return super()._complete_messages(messages)


class _Answers(dict):
    def __init__(self, spec, gold_by_query, fallback_label):
        super().__init__({
            "`proposed_instruction`": {"proposed_instruction": f"Route the query. {HINT}"},
            "`new_instruction`": {"new_instruction": f"Route the query. {HINT}"},
            "`shortened_instruction`": {"shortened_instruction": f"Route. {HINT}"},
            "`observations`": {"observations": "Search queries for media."},
            "`summary`": {"summary": "Search queries."},
            "`program_description`": {"program_description": "Routes queries."},
            "`module_description`": {"module_description": "Classifies queries."},
            "`module_advice`": {"discussion": "More hints help.", "module_advice": '{"self": "' + HINT + '"}'},
            "`discussion`": {"discussion": "More hints help.", "module_advice": '{"self": "' + HINT + '"}'},
        })
        self.spec = spec
        self.gold_by_query = gold_by_query
        self.fallback_label = fallback_label
        self.messages = []

    def items(self):
        header = f"`{self.spec.label_field}`"
        if self.messages and header in self.messages[-1]["content"]:
            prompt = "\n".join(message["content"] for message in self.messages)
            match = _QUERY.search(self.messages[-1]["content"] + "\n\n")
            gold = self.gold_by_query.get(match.group(1).strip()) if match else None
            hinted = HINT in prompt or len(self.messages) > 2  # instruction hint, or demos in the chat
            yield header, {self.spec.label_field: gold if (hinted and gold) else self.fallback_label}
        yield from super().items()


def scripted_lm(spec, examples, fallback_label: str) -> DummyLM:
    gold = {example.query: getattr(example, spec.label_field) for example in examples}
    lm = DummyLM(_Answers(spec, gold, fallback_label), adapter=dspy.JSONAdapter())
    lm._engine_spec = _RecordingEngine(lm)
    return lm
