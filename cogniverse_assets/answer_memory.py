"""The LM answers a module version gave on validation examples, kept so that a later evaluation of
the same version asks the LM only about examples it has not answered yet.

The validation split is assigned by hash and only grows, and an evaluation's deployed side is a
version an earlier evaluation already scored (as its candidate, or as its deployed side). Without
this, every lane run asks the LM the same questions about the deployed module again: in a steady
state, half of an evaluation's LM calls. An answer is reused only under the same key: the student
LM, the adapter and its prompt layout, the program (its saved state, its signature and label set)
and the example's inputs. Any of these changed is a miss, and the LM is asked.

The answers are stored per version under the module's artifacts (``answers/<version>.json``), with
the latency the call took, so that a remembered answer reports the latency it was measured with.
Only the last evaluation's two versions are kept: one of them is the next evaluation's deployed side
(after a rollback to an older version, its answers are asked for again).

A validation example comes from a span, and the router that answered it in production records its
program key on the LM path (``routing.program_key``). Where that key is this memory's, the span's
answer is the version's own answer, given where it is served: the memory takes it (``take_served``)
instead of asking the LM the same question again. So an evaluation's deployed side costs LM calls
only on examples the deployed router did not answer itself with the LM (fast-path answers, traffic
from an earlier version or from another LM).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import dspy
from upath import UPath

from cogniverse_assets.modules.registry import RoutingModuleSpec
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.lm import lm_identity

ANSWERS_FOLDER = "answers"


@dataclass(frozen=True)
class RememberedAnswer:
    label: str
    latency_ms: float


@dataclass(frozen=True)
class ServedAnswer:
    """A router's LM-path answer as its span recorded it: the label, the router's latency and the
    program key it answered under."""

    label: str
    latency_ms: float
    program_key: str


def fingerprint(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def program_key(spec: RoutingModuleSpec, program: dspy.Module, lm: dspy.LM, adapter: dspy.Adapter) -> str:
    """What decides a program's answer besides the inputs."""
    return fingerprint(
        {
            **lm_identity(lm, adapter),
            "signature": str(spec.signature),
            "labels": list(spec.labels),
            "state": program.dump_state(),
        }
    )


@dataclass
class AnswerMemory:
    """One version's remembered answers, under one program key."""

    path: UPath
    key: str
    answers: dict[str, RememberedAnswer] = field(default_factory=dict)
    recalled: int = 0
    taken_from_serving: int = 0

    @classmethod
    def open(
        cls,
        artifacts: ArtifactStore,
        tenant_id: str,
        spec: RoutingModuleSpec,
        version: str,
        program: dspy.Module,
        lm: dspy.LM,
        adapter: dspy.Adapter,
    ) -> AnswerMemory:
        path = artifacts.path(tenant_id, spec.name, ANSWERS_FOLDER, f"{version}.json")
        memory = cls(path, program_key(spec, program, lm, adapter))
        try:
            stored = artifacts.read_json(path) or {}
        except ValueError:  # a damaged file only costs the LM calls it would have saved
            stored = {}
        if stored.get("key") == memory.key:
            memory.answers = {
                example: RememberedAnswer(str(answer["label"]), float(answer["latency_ms"]))
                for example, answer in (stored.get("answers") or {}).items()
            }
        return memory

    def example_key(self, inputs: Mapping[str, object]) -> str:
        return fingerprint(dict(inputs))

    def recall(self, inputs: Mapping[str, object]) -> RememberedAnswer | None:
        answer = self.answers.get(self.example_key(inputs))
        self.recalled += answer is not None
        return answer

    def remember(self, inputs: Mapping[str, object], label: str, latency_ms: float) -> None:
        self.answers[self.example_key(inputs)] = RememberedAnswer(label, round(latency_ms, 3))

    def take_served(self, inputs: Sequence[Mapping[str, object]], served: Sequence[ServedAnswer | None]) -> int:
        """Remember each served answer whose program key is this memory's, where nothing is
        remembered for its inputs yet; returns how many were taken."""
        taken = 0
        for example_inputs, answer in zip(inputs, served, strict=True):
            if answer is None or answer.program_key != self.key:
                continue
            example = self.example_key(example_inputs)
            if example not in self.answers:
                self.answers[example] = RememberedAnswer(answer.label, round(answer.latency_ms, 3))
                taken += 1
        self.taken_from_serving += taken
        return taken

    def save(self, artifacts: ArtifactStore) -> None:
        artifacts.write_json(
            self.path,
            {"key": self.key, "answers": {example: asdict(answer) for example, answer in self.answers.items()}},
        )


def served_answers(spec: RoutingModuleSpec, rows: Iterable[Mapping[str, object]]) -> list[ServedAnswer | None]:
    """Per training-set row (``router_label``, ``router_program_key``, ``processing_time_ms``), the
    LM-path answer its span recorded, or None where the span recorded none that is complete."""
    answers: list[ServedAnswer | None] = []
    for row in rows:
        label, key, latency = row.get("router_label"), row.get("router_program_key"), row.get("processing_time_ms")
        complete = (
            isinstance(label, str)
            and label in spec.labels
            and isinstance(key, str)
            and isinstance(latency, (int, float))
            and math.isfinite(latency)
        )
        answers.append(ServedAnswer(label, float(latency), key) if complete else None)
    return answers


def forget_other_versions(artifacts: ArtifactStore, tenant_id: str, module: str, keep: set[str]) -> list[str]:
    """Drop the memories of versions other than ``keep`` (the candidate and the deployed one: the
    next evaluation's deployed side is one of them); returns the versions dropped."""
    folder = artifacts.path(tenant_id, module, ANSWERS_FOLDER)
    if not folder.exists():
        return []
    dropped = [path for path in folder.iterdir() if path.suffix == ".json" and path.stem not in keep]
    for path in dropped:
        path.unlink()
    return sorted(path.stem for path in dropped)
