"""Synthetic training queries grounded in the tenant's content.

For each requested example the generator picks a target label (round-robin, so classes are
balanced), samples content of the matching modality from the content backend, and asks the
teacher LM for a query that the content answers and that calls for the target label. Each
candidate is validated — non-empty and sane length, not a duplicate of a real or earlier synthetic
query, and a separate verifier call agreeing that the query calls for the intended label — and
retried up to ``MAX_ATTEMPTS`` times with other content. A candidate that repeats
``COPIED_RUN_WORDS`` or more consecutive words of its content is rejected (``copies_content``): it
is the library's text, not a user's request. The local 0.5B teacher returns the content's title,
description and transcript nearly every time; after ``COPIES_BEFORE_STOP`` copies in a row,
generation stops and says so (``GenerationReport.stopped``) instead of spending the rest of the
request on them. A tenant's other lanes are told (``CopyVerdict``): their requests are probed from
the first, and ``COPIES_TO_CONFIRM`` copies in a row stop them. Once the teacher has copied, each
later request is first probed: its first ``COPY_PROBE_TOKENS`` tokens, at the same settings, show a
copy long before the full answer (80-256 tokens of the content, about 10 s a call on 2 cores) would.
A request that does not start as a copy is then written in full, so the probe only rejects early
what the full answer would repeat: at temperature 0 it is that answer's beginning, up to the local
server's own run-to-run variation (bench/synthetic_generation.py: the same rejections in 5 of 6
runs, in half the time).

The teacher's answers are kept per request between runs (``TeacherAnswers``): at temperature 0 (the
default; a teacher that samples is asked every time) the same request to the same teacher gets the
same answer, and a lane whose teacher copied or was turned down sends the same requests on its next
run (they depend on the stored examples' count, the content sampled and the labels). Such a run asks
the teacher only what it has not answered yet; with the local teacher that is every later run of a
lane whose synthetic data stays empty.

A paraphrase that comes back as a duplicate is retried as a direct request: the local 0.5B teacher
tends to return the seed it was asked to reword, at temperature 0 each time, so retrying the same
style only spends LM calls.

The verifier is the teacher, not the module's current router: a router check would keep only
queries the router already gets right, which teaches it nothing.

Augmentations (the ``augmentation`` column) vary how the request is written: ``direct``;
``paraphrase`` of an already accepted query of the same label; ``modality_variation`` (a request
about the content phrased around its kind of media); ``complexity`` (longer, with an extra
constraint); ``contrast`` (mentions another kind of content yet calls for the target label: a
hard negative).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Iterable

import dspy
import pandas as pd
from dspy.utils.exceptions import AdapterParseError

from cogniverse_assets.answer_memory import fingerprint
from cogniverse_assets.blending import normalize_query
from cogniverse_assets.modules.registry import RoutingModuleSpec
from cogniverse_resources import trace_contract as tc
from cogniverse_resources.content import ContentBackend, ContentItem
from cogniverse_resources.lm import lm_identity

MAX_ATTEMPTS = 3
MIN_QUERY_CHARS = 4
MAX_QUERY_CHARS = 300
# A user does not type eight words of the content in a row; a title (usually shorter) may be typed.
COPIED_RUN_WORDS = 8
COPIES_BEFORE_STOP = 5
# In a lane of a tenant whose same teacher already stopped another lane by copying: enough to see that it
# copies these requests too, and two rather than one so that one unlucky request does not decide a lane.
COPIES_TO_CONFIRM = 2
# Enough for the request's first dozen words after the JSON key: a copy starts with its content's title.
COPY_PROBE_TOKENS = 24
AUGMENTATIONS = ("direct", "paraphrase", "modality_variation", "complexity", "contrast")
SYNTHETIC_COLUMNS = [
    "query",
    "detected_modalities",
    "entities",
    "label",
    "provenance",
    "label_score",
    "augmentation",
    "source_item_ids",
    "attempts",
]


class WriteRoutingQuery(dspy.Signature):
    """Write one realistic request a user of a multimodal search product would type. The given
    content must be a good answer to it, and it must clearly call for the intended routing decision.
    Write only the user's words."""

    content: str = dspy.InputField(desc="content in the tenant's library that should answer the request")
    intended_decision: str = dspy.InputField(desc="what the request must call for")
    style: str = dspy.InputField(desc="how to write the request")
    query: str = dspy.OutputField(desc="the user's request, one sentence")
    entities: list[str] = dspy.OutputField(desc="named entities or key phrases in the request")


class CheckRoutingQuery(dspy.Signature):
    """Does the user's request call for the intended routing decision?"""

    query: str = dspy.InputField()
    intended_decision: str = dspy.InputField()
    agrees: bool = dspy.OutputField()


STYLE_TEXT = {
    "direct": "a natural, direct request",
    "paraphrase": "a paraphrase of this request with different wording: {seed}",
    "modality_variation": "a request that names the kind of media it wants in everyday words",
    "complexity": "a longer, more specific request with an extra constraint (time, person, detail)",
    "contrast": (
        "a request that mentions another kind of content in passing but clearly calls for the intended decision"
    ),
}


@dataclass
class GenerationReport:
    requested: int
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    lm_calls: int = 0
    copy_probes: int = 0  # of lm_calls: short writes that only checked for a copy
    remembered: int = 0  # answers taken from the last run's instead of asking the teacher
    seconds: float = 0.0
    # Why generation ended before the request was met, if it did.
    stopped: str | None = None
    consecutive_copies: int = 0  # write calls in a row that returned copied content

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def reject_copy(self) -> None:
        """A write that copied its content, found by the probe or in the full answer."""
        self.reject("copies_content")
        self.consecutive_copies += 1


def teacher_key(lm: dspy.LM, adapter: dspy.Adapter) -> str:
    """Who answers the generator's requests: the teacher, its settings, the adapter and the signatures."""
    return fingerprint(
        {
            **lm_identity(lm, adapter),
            "signatures": [
                (str(signature), signature.instructions) for signature in (WriteRoutingQuery, CheckRoutingQuery)
            ],
        }
    )


@dataclass(frozen=True)
class CopyVerdict:
    """The teacher (``teacher_key``) copied its content ``copies`` times in a row in the tenant's ``module``
    lane and stopped it. Kept per tenant, since what the teacher copies is the tenant's content."""

    teacher: str
    module: str
    copies: int

    @classmethod
    def from_json(cls, stored: object) -> CopyVerdict | None:
        """The verdict ``to_json`` wrote, or ``None`` for anything else (a damaged file is no verdict)."""
        if not isinstance(stored, Mapping):
            return None
        teacher, module, copies = stored.get("teacher"), stored.get("module"), stored.get("copies")
        if not (isinstance(teacher, str) and isinstance(module, str) and isinstance(copies, int)):
            return None
        return cls(teacher, module, copies)

    def to_json(self) -> dict:
        return {"teacher": self.teacher, "module": self.module, "copies": self.copies}


@dataclass
class TeacherAnswers:
    """The teacher's answers by request: ``earlier`` from the last run, ``now`` what this run used
    (asked or recalled), which the next run gets as its ``earlier``. Under another ``key`` (teacher,
    its settings, the signatures) nothing earlier is used. A temperature-0 teacher gives the same
    answer to the same request, so each request is asked once; one that samples is asked each time."""

    key: str
    earlier: dict[str, dict] = field(default_factory=dict)
    now: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def for_teacher(cls, lm: dspy.LM, adapter: dspy.Adapter, stored: Mapping | None = None) -> TeacherAnswers | None:
        """Answers for ``lm`` with ``adapter``, starting from ``stored`` (``to_json``) if it was the same
        teacher; ``None`` for a teacher sampling at a temperature above 0."""
        if lm.kwargs.get("temperature"):
            return None
        key = teacher_key(lm, adapter)
        stored = stored if isinstance(stored, Mapping) else {}
        earlier = stored.get("answers") if stored.get("key") == key else None
        return cls(key, dict(earlier) if isinstance(earlier, Mapping) else {})

    def to_json(self) -> dict:
        return {"key": self.key, "answers": self.now}


def _words(text: str) -> list[str]:
    return "".join(ch if ch.isalnum() else " " for ch in text.lower()).split()


def copies_content(query: str, content: str, run: int = COPIED_RUN_WORDS) -> bool:
    """Whether ``query`` repeats ``run`` or more consecutive words of ``content``."""
    words = _words(query)
    if len(words) < run:
        return False
    source = _words(content)
    runs = {tuple(source[i : i + run]) for i in range(len(source) - run + 1)}
    return any(tuple(words[i : i + run]) in runs for i in range(len(words) - run + 1))


class SyntheticQueryGenerator:
    def __init__(
        self,
        spec: RoutingModuleSpec,
        backend: ContentBackend,
        lm: dspy.LM,
        adapter: dspy.Adapter,
        seed: int = 0,
        copy_probe_tokens: int | None = COPY_PROBE_TOKENS,  # None: no probe (bench/synthetic_generation.py)
        answers: TeacherAnswers | None = None,  # None: every request asks the teacher
        copied_elsewhere: CopyVerdict | None = None,  # this teacher stopped another lane of the tenant
    ):
        self.spec = spec
        self.copied_elsewhere = copied_elsewhere
        self.copies_before_stop = COPIES_TO_CONFIRM if copied_elsewhere else COPIES_BEFORE_STOP
        self.answers = answers
        self.copy_probe_tokens = copy_probe_tokens
        self.backend = backend
        self.lm = lm
        self.adapter = adapter
        self.rng = random.Random(seed)
        self.write = dspy.Predict(WriteRoutingQuery)
        self.check = dspy.Predict(CheckRoutingQuery)

    def _content_for(self, label: str) -> list[ContentItem]:
        modalities = list(self.spec.content_modalities[label]) or [self.rng.choice(tc.MODALITIES)]
        items = []
        for modality in modalities:
            sample = self.backend.sample(1, modality=modality, seed=self.rng.randrange(1 << 30))
            items.extend(sample)
        return items

    def _intended(self, label: str) -> str:
        return f"{label}: {self.spec.label_meanings[label]}"

    def generate(self, n: int, avoid_queries: Iterable[str] = ()) -> tuple[pd.DataFrame, GenerationReport]:
        """Up to ``n`` validated examples, balanced across the module's labels."""
        report = GenerationReport(requested=n)
        started = time.monotonic()
        seen = {normalize_query(query) for query in avoid_queries}
        accepted_by_label: dict[str, list[str]] = {}
        rows: list[dict] = []
        labels = list(self.spec.labels)
        self.rng.shuffle(labels)
        with dspy.context(lm=self.lm, adapter=self.adapter):
            for index in range(n):
                if report.consecutive_copies >= self.copies_before_stop:
                    report.stopped = self._stop_reason(report.consecutive_copies)
                    break
                label = labels[index % len(labels)]
                augmentation = AUGMENTATIONS[(index // len(labels)) % len(AUGMENTATIONS)]
                row = self._one(label, augmentation, seen, accepted_by_label, report)
                if row is not None:
                    rows.append(row)
                    seen.add(normalize_query(row["query"]))
                    accepted_by_label.setdefault(label, []).append(row["query"])
        report.accepted = len(rows)
        report.seconds = time.monotonic() - started
        return pd.DataFrame(rows, columns=SYNTHETIC_COLUMNS), report

    def _stop_reason(self, copies: int) -> str:
        elsewhere = self.copied_elsewhere
        before = ""
        if elsewhere:
            before = f" (and {elsewhere.copies} times in a row in this tenant's {elsewhere.module} lane)"
        return (
            f"the teacher LM copied its content instead of writing a request {copies} times in a row{before}; "
            "set ROUTER_OPTIMIZER_TEACHER_MODEL to a stronger model"
        )

    def _one(
        self, label: str, augmentation: str, seen: set[str], accepted: dict[str, list[str]], report: GenerationReport
    ) -> dict | None:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if report.consecutive_copies >= self.copies_before_stop:
                return None
            items = self._content_for(label)
            if not items:
                report.reject("no_content")
                return None
            seed_query = self.rng.choice(accepted[label]) if accepted.get(label) else ""
            style_key = augmentation if (augmentation != "paraphrase" or seed_query) else "direct"
            style = STYLE_TEXT[style_key].format(seed=seed_query)
            content = "\n".join(item.as_text() for item in items)
            request = {"content": content, "intended_decision": self._intended(label), "style": style}
            probe = self.copy_probe_tokens and (self.copied_elsewhere or report.rejected.get("copies_content"))
            if probe and self._starts_as_copy(request, report):
                report.reject_copy()
                continue
            written = self._ask("write", request, report, lambda: self._written(request))
            query = " ".join(str(written["query"]).split())
            if not MIN_QUERY_CHARS <= len(query) <= MAX_QUERY_CHARS:
                report.reject("length")
                continue
            if copies_content(query, content):
                report.reject_copy()
                continue
            report.consecutive_copies = 0
            if normalize_query(query) in seen:
                report.reject("duplicate")
                if style_key == "paraphrase":
                    augmentation = "direct"
                continue
            check = {"query": query, "intended_decision": self._intended(label)}
            verdict = self._ask("check", check, report, lambda: {"agrees": bool(self.check(**check).agrees)})
            if not verdict["agrees"]:
                report.reject("verifier_disagrees")
                continue
            modalities = sorted({item.modality for item in items})
            return {
                "query": query,
                "detected_modalities": modalities,
                "entities": [entity[:100] for entity in written["entities"]][:10],
                "label": label,
                "provenance": "synthetic",
                "label_score": None,
                "augmentation": style_key,
                "source_item_ids": [item.id for item in items],
                "attempts": attempt,
            }
        return None

    def _ask(self, kind: str, request: dict[str, str], report: GenerationReport, call: Callable[[], dict]) -> dict:
        """The teacher's answer to ``request`` (``call`` asks it), asked once: this run's or the last
        run's answer if it was asked the same before."""
        key = fingerprint({"kind": kind, **request})
        answer = None if self.answers is None else self.answers.now.get(key) or self.answers.earlier.get(key)
        if answer is not None:
            report.remembered += 1
        else:
            answer = call()
            report.lm_calls += 1
            report.copy_probes += kind == "probe"
        if self.answers is not None:
            self.answers.now[key] = answer
        return answer

    def _written(self, request: dict[str, str]) -> dict:
        written = self.write(**request)
        return {"query": str(written.query), "entities": [str(entity) for entity in (written.entities or [])]}

    def _starts_as_copy(self, request: dict[str, str], report: GenerationReport) -> bool:
        """Whether the teacher's first ``copy_probe_tokens`` tokens for ``request`` copy its content."""
        probe = {**request, "max_tokens": str(self.copy_probe_tokens)}
        text = self._ask("probe", probe, report, lambda: {"query": self._probe(request)})["query"]
        return copies_content(text, request["content"])

    def _probe(self, request: dict[str, str]) -> str:
        lm_log = logging.getLogger("dspy.clients.lm")
        level = lm_log.level
        lm_log.setLevel(logging.ERROR)  # the probe is cut short on purpose: no truncation warning
        try:
            probe = self.write(**request, config={"max_tokens": self.copy_probe_tokens})
            text = str(probe.query)
        except AdapterParseError as error:  # cut inside the JSON: what parsed, else the raw text
            text = str((error.parsed_result or {}).get("query") or error.lm_response or "")
        finally:
            lm_log.setLevel(level)
        return text
