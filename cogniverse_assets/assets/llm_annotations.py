"""``<module>/llm_annotations``: the teacher LM labels the routing spans nobody has labeled.

Reads the tenant's ``<module>`` routing spans of the last ``phoenix_lookback_hours`` with their
``routing_feedback`` annotations from Phoenix, and this asset's own record (artifact table
``llm_annotations``); writes ``routing_feedback`` annotations of annotator kind LLM (identifier
``TEACHER_IDENTIFIER``) to Phoenix and the updated record. It runs before ``routing_traces``, which
takes these labels by its precedence (human > LLM > the router's confident answer).

Which spans: those ingestion would leave unlabeled (``choose_label``): no human or LLM label, and
the router's own answer not trusted (agent failed, confidence missing or below the tenant's
``min_trace_confidence``); newest first, since old spans soon leave the lookback window. The
teacher is the module's unoptimized ``Predict`` over its registry signature, on the teacher LM.
A span with a human label is never annotated; a span with an LLM annotation (this asset's or
another judge's) or in the record is never labeled again, so a wrong LLM label a person deleted
does not come back. At most ``llm_annotation_budget`` LM calls per run; 0 (the default) is off:
no Phoenix call and no LM call.

Agreement with people, per human label, from two sources kept in the record (so the figures
cover every run, not just this one):

- ``after_labeling``: spans this asset labeled that a person labeled later (read from Phoenix,
  no LM call);
- ``sample``: up to a fifth of the budget (``budget // SAMPLE_EVERY``) goes to the teacher
  predicting, without writing anything, on human-labeled spans it has not judged yet. People
  rarely label what already has a label, so without it the figure would stay empty for most
  tenants exactly when it is needed: before trusting the teacher's labels.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import dagster as dg
import dspy
import pandas as pd
from dspy.utils.exceptions import AdapterParseError

from cogniverse_assets.assets.lane import EXTERNAL_CALL_RETRY, lane_asset, phoenix_errors, tenant_config, tenant_phoenix
from cogniverse_assets.examples import Malformed, choose_label, parse_page
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec
from cogniverse_resources import trace_contract as tc
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.phoenix import PhoenixResource
from cogniverse_resources.redaction import redact_urls
from cogniverse_resources.tenant import RoutingConfig

RECORD_TABLE = "llm_annotations"
RECORD_COLUMNS = ["span_id", "start_time", "query", "llm_label", "human_label", "source", "recorded_at"]
# Phoenix keeps one annotation per (name, span, identifier): its own identifier keeps the teacher's
# label apart from a person's ("human") and from other LLM judges' ("llm").
TEACHER_IDENTIFIER = "cogniverse-teacher"
SAMPLE_EVERY = 5  # one LM call in five may measure agreement on human-labeled spans
WRITE_BATCH = 25  # annotations written per Phoenix request; an LM failure loses at most one batch


class TeacherUnavailable(RuntimeError):
    """The teacher LM failed; retried like any outside call."""


@dataclass(frozen=True)
class SpanToJudge:
    """A span the teacher answers: one to annotate, or a human-labeled one to measure agreement."""

    span_id: str
    start_time: str
    query: str
    inputs: dict[str, object]  # the signature's input fields
    human_label: str | None = None


@dataclass
class AnnotationRun:
    """What one run did; becomes the materialization's metadata."""

    scanned_spans: int = 0
    labeled: Counter = field(default_factory=Counter)  # label -> spans annotated with it
    sampled: int = 0
    lm_calls: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> spans
    record_path: str | None = None
    agreement: dict[str, dict] = field(default_factory=dict)  # see ``agreement``


@dataclass
class _Scan:
    candidates: list[SpanToJudge] = field(default_factory=list)
    samples: list[SpanToJudge] = field(default_factory=list)
    later_human: dict[str, tuple[str, str]] = field(default_factory=dict)  # span -> (human, teacher) label


def _teacher_label(annotations: list[dict]) -> str | None:
    for annotation in annotations:
        if (
            str(annotation.get("annotator_kind", "")).upper() == "LLM"
            and annotation.get("identifier") == TEACHER_IDENTIFIER
        ):
            return (annotation.get("result") or {}).get("label")
    return None


def _judge(example: dict, spec: RoutingModuleSpec, human_label: str | None = None) -> SpanToJudge:
    return SpanToJudge(
        span_id=example["span_id"],
        start_time=example["start_time"],
        query=example["query"],
        inputs=spec.inputs(example),
        human_label=human_label,
    )


def _scan(
    phoenix: PhoenixResource,
    spec: RoutingModuleSpec,
    config: RoutingConfig,
    recorded: set[str],
    now: datetime,
    run: AnnotationRun,
) -> _Scan:
    """Sort the window's spans into candidates, agreement samples and skips (newest first)."""
    budget = config.llm_annotation_budget
    scan = _Scan()
    start = now - timedelta(hours=config.phoenix_lookback_hours)
    for page in phoenix.iter_routing_spans(config.tenant_id, spec.name, start, now + timedelta(seconds=1)):
        run.scanned_spans += len(page)
        examples, rejected = parse_page(page, spec)
        run.skipped["breaks_contract"] += len(rejected)
        annotations = phoenix.feedback_annotations(config.tenant_id, [example["span_id"] for example in examples])
        for example in examples:
            own = annotations.get(example["span_id"], [])
            try:
                label, provenance, _ = choose_label(example, own, spec, config.min_trace_confidence)
            except Malformed:
                run.skipped["non_canonical_annotation"] += 1  # ingestion quarantines these
                continue
            teacher = _teacher_label(own)
            if provenance == "human":
                run.skipped["human_label"] += 1
                if teacher is not None:
                    scan.later_human[example["span_id"]] = (label, teacher)
                elif example["span_id"] not in recorded and len(scan.samples) < budget // SAMPLE_EVERY:
                    scan.samples.append(_judge(example, spec, human_label=label))
            elif provenance == "llm":
                run.skipped["llm_label"] += 1
            elif provenance == "router":
                run.skipped["confident_router_label"] += 1
            elif example["span_id"] in recorded:
                run.skipped["labeled_before"] += 1  # in the record, its annotation gone from Phoenix
            elif len(scan.candidates) < budget:
                scan.candidates.append(_judge(example, spec))
            else:
                run.skipped["over_budget"] += 1
    return scan


def _predict(program: dspy.Module, spec: RoutingModuleSpec, span: SpanToJudge, where: str, model: str) -> str | None:
    """The teacher's label for ``span`` (None: an answer that is not a canonical label)."""
    try:
        label = spec.label_of(program(**span.inputs))
    except AdapterParseError:
        return None
    except Exception as error:  # litellm raises many types; each one means the LM did not answer
        raise TeacherUnavailable(
            f"teacher LM {model} failed while labeling {where} span {span.span_id}: "
            f"{type(error).__name__}: {redact_urls(str(error))[:500]}"
        ) from error
    return label if label in spec.labels else None


def _write_annotations(phoenix: PhoenixResource, tenant_id: str, labels: list[tuple[str, str]]) -> None:
    if not labels:
        return
    phoenix.client().spans.log_span_annotations(
        span_annotations=[
            {
                "span_id": span_id,
                "name": tc.FEEDBACK_ANNOTATION,
                "annotator_kind": "LLM",
                # No score: the teacher gives none, and a constant would read as a confidence.
                "result": {"label": label},
                "identifier": TEACHER_IDENTIFIER,
            }
            for span_id, label in labels
        ],
        sync=True,
    )


def annotate_spans(
    phoenix: PhoenixResource,
    artifacts: ArtifactStore,
    lm: LanguageModelResource,
    spec: RoutingModuleSpec,
    config: RoutingConfig,
    now: datetime | None = None,
) -> AnnotationRun:
    """Label up to the budget's unlabeled spans in Phoenix and measure agreement; see the module docstring."""
    now = now or datetime.now(timezone.utc)
    tenant_id = config.tenant_id
    run = AnnotationRun()
    record = artifacts.read_table(tenant_id, spec.name, RECORD_TABLE)
    record = record if record is not None else pd.DataFrame(columns=RECORD_COLUMNS)
    record["human_label"] = record["human_label"].astype(object)  # an all-empty column reads back as float
    scan = _scan(phoenix, spec, config, set(record["span_id"]), now, run)

    stamp = now.isoformat()
    new_rows: list[dict] = []
    for span_id, (human, teacher) in scan.later_human.items():
        known = record["span_id"] == span_id
        if known.any():
            record.loc[known, "human_label"] = human
        else:  # labeled by a run whose record write was lost
            new_rows.append(_row(span_id, None, None, teacher, human, "annotated", stamp))

    to_label = scan.candidates[: config.llm_annotation_budget - len(scan.samples)]
    run.skipped["over_budget"] += len(scan.candidates) - len(to_label)
    program = spec.program()
    model = lm.teacher_model or lm.student_model
    where = f"{tenant_id}/{spec.name}"
    pending: list[tuple[str, str]] = []
    try:
        with dspy.context(lm=lm.teacher(), adapter=lm.adapter()):
            for span in scan.samples:
                label = _predict(program, spec, span, where, model)
                run.lm_calls += 1
                run.sampled += 1
                new_rows.append(
                    _row(span.span_id, span.start_time, span.query, label, span.human_label, "sample", stamp)
                )
            for span in to_label:
                label = _predict(program, spec, span, where, model)
                run.lm_calls += 1
                if label is None:
                    run.skipped["teacher_answer_not_canonical"] += 1
                    continue
                pending.append((span.span_id, label))
                new_rows.append(_row(span.span_id, span.start_time, span.query, label, None, "annotated", stamp))
                if len(pending) == WRITE_BATCH:
                    _write_annotations(phoenix, tenant_id, pending)
                    run.labeled.update(label for _, label in pending)
                    pending = []
            _write_annotations(phoenix, tenant_id, pending)
            run.labeled.update(label for _, label in pending)
            pending = []
    finally:
        # Whatever reached Phoenix is recorded, even when the teacher or Phoenix failed midway;
        # labels that never reached it are not.
        unwritten = {span_id for span_id, _ in pending}
        rows = [row for row in new_rows if row["span_id"] not in unwritten]
        fresh = pd.DataFrame(rows, columns=RECORD_COLUMNS)
        if fresh.empty:
            merged = record
        else:
            merged = fresh if record.empty else pd.concat([record, fresh], ignore_index=True)
        run.record_path = artifacts.write_table(tenant_id, spec.name, RECORD_TABLE, merged)
        run.agreement = agreement(merged)
    return run


def _row(
    span_id: str, start_time: str | None, query: str | None, llm: str | None, human: str | None, source: str, stamp: str
) -> dict:
    return dict(zip(RECORD_COLUMNS, (span_id, start_time, query, llm, human, source, stamp)))


def agreement(record: pd.DataFrame) -> dict[str, dict]:
    """Per source (``after_labeling``, ``sample``) and per human label: how often the teacher's
    label equals the person's (``n``, ``agreed``, ``rate``); a source with no such span is left out."""
    figures: dict[str, dict] = {}
    judged = record[record["human_label"].notna()]
    for source, name in (("annotated", "after_labeling"), ("sample", "sample")):
        rows = judged[judged["source"] == source]
        if rows.empty:
            continue
        agreed = rows["llm_label"] == rows["human_label"]
        per_label = {
            str(label): _rate(int(len(group)), int(agreed[group.index].sum()))
            for label, group in rows.groupby("human_label")
        }
        figures[name] = {**_rate(len(rows), int(agreed.sum())), "per_label": per_label}
    return figures


def _rate(n: int, agreed: int) -> dict:
    return {"n": n, "agreed": agreed, "rate": round(agreed / n, 4)}


def build_llm_annotations(spec: RoutingModuleSpec) -> dg.AssetsDefinition:
    @lane_asset(
        spec,
        "llm_annotations",
        retry_policy=EXTERNAL_CALL_RETRY,
        kinds={"phoenix", "dspy"},
        description=f"Reads unlabeled `{spec.name}` routing spans + their feedback from the tenant's Phoenix "
        "project; writes the teacher LM's labels back as LLM `routing_feedback` annotations (at most "
        "`llm_annotation_budget` per run, 0 = off) and its record with agreement figures (artifact store).",
    )
    def llm_annotations(
        context: dg.AssetExecutionContext,
        phoenix: PhoenixResource,
        config_store: ConfigStoreResource,
        artifacts: ArtifactStore,
        lm: LanguageModelResource,
    ) -> dg.MaterializeResult:
        config = tenant_config(config_store, context.partition_key)
        if config.llm_annotation_budget == 0:
            return dg.MaterializeResult(
                metadata={"status": "off", "reason": "llm_annotation_budget is 0", "labeled": 0, "lm_calls": 0}
            )
        source = tenant_phoenix(phoenix, config)
        with phoenix_errors(source, f"auto-annotating {config.tenant_id}/{spec.name}"):
            run = annotate_spans(source, artifacts, lm, spec, config)
        labeled = sum(run.labeled.values())
        context.log.info(
            f"{config.tenant_id}/{spec.name}: the teacher labeled {labeled} spans and judged {run.sampled} "
            f"human-labeled ones ({run.lm_calls} LM calls)"
        )
        return dg.MaterializeResult(
            metadata={
                "status": "on",
                "budget": config.llm_annotation_budget,
                "scanned_spans": run.scanned_spans,
                "labeled": labeled,
                "labeled_per_label": dg.MetadataValue.json(dict(run.labeled)),
                "agreement_samples": run.sampled,
                "lm_calls": run.lm_calls,
                "skipped": dg.MetadataValue.json({reason: n for reason, n in run.skipped.items() if n}),
                "agreement": dg.MetadataValue.json(run.agreement),
                "record": dg.MetadataValue.path(run.record_path),
            }
        )

    return llm_annotations


llm_annotations_assets = [build_llm_annotations(spec) for spec in ROUTING_MODULES.values()]
