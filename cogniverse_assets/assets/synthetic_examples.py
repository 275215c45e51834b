"""``<module>/synthetic_examples``: synthetic training queries grounded in the tenant's content.

Reads the labeled example table (to size the request and avoid real queries) and the content
backend (Vespa or the bundled catalog); writes the synthetic example table. Generates only what
the blending plan asks for and the stored table does not already hold, so a re-run with nothing
new makes no LM calls. The teacher's answers of the last generation are kept beside the table
(``synthetic_teacher_answers.json``): a later run that sends the same requests to the same teacher
at temperature 0, as every run does while nothing is kept, asks it only what is new. A lane stopped
because the teacher copied its content leaves a verdict for the tenant's other lanes
(``synthetic_teacher_verdict.json`` in its own folder, so lanes that stop together keep theirs),
which then confirm it in a request or two instead of five; a lane whose teacher writes an accepted
request clears every lane's verdict on that teacher.
"""

import math

import dagster as dg
import pandas as pd
from upath import UPath

from cogniverse_assets.assets.lane import EXTERNAL_CALL_RETRY, lane_asset, tenant_config
from cogniverse_assets.assets.routing_traces import TRACES_TABLE
from cogniverse_assets.blending import blend_plan
from cogniverse_assets.examples import EXAMPLE_COLUMNS, LABELED_PROVENANCES
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec
from cogniverse_assets.synthetic import (
    SYNTHETIC_COLUMNS,
    CopyVerdict,
    GenerationReport,
    SyntheticQueryGenerator,
    TeacherAnswers,
    teacher_key,
)
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.content import ContentBackendResource
from cogniverse_resources.lm import LanguageModelResource

SYNTHETIC_TABLE = "synthetic_examples"
TEACHER_ANSWERS_FILE = "synthetic_teacher_answers.json"
COPY_VERDICT_FILE = "synthetic_teacher_verdict.json"  # in the lane's folder (earlier releases: the tenant's)
# Some candidates fail validation; ask for a little more than the plan needs.
GENERATION_MARGIN = 0.1


def labeled_real(artifacts: ArtifactStore, tenant_id: str, module: str) -> pd.DataFrame:
    table = artifacts.read_table(tenant_id, module, TRACES_TABLE)
    if table is None:
        return pd.DataFrame(columns=EXAMPLE_COLUMNS)
    return table[table["provenance"].isin(LABELED_PROVENANCES)].reset_index(drop=True)


def read_teacher_answers(artifacts: ArtifactStore, tenant_id: str, module: str) -> dict | None:
    try:
        return artifacts.read_json(artifacts.path(tenant_id, module, TEACHER_ANSWERS_FILE))
    except ValueError:  # damaged: the teacher is asked again, as without the file
        return None


def verdict_paths(artifacts: ArtifactStore, tenant_id: str) -> list[UPath]:
    """Each lane's verdict file, then the tenant-level one an earlier release wrote."""
    lanes = [artifacts.path(tenant_id, module, COPY_VERDICT_FILE) for module in ROUTING_MODULES]
    return [*lanes, artifacts.path(tenant_id, COPY_VERDICT_FILE)]


def read_verdict(artifacts: ArtifactStore, path: UPath) -> CopyVerdict | None:
    try:
        return CopyVerdict.from_json(artifacts.read_json(path))
    except ValueError:  # damaged: no verdict, as without the file
        return None


def read_copy_verdicts(artifacts: ArtifactStore, tenant_id: str) -> list[CopyVerdict]:
    verdicts = (read_verdict(artifacts, path) for path in verdict_paths(artifacts, tenant_id))
    return [verdict for verdict in verdicts if verdict is not None]


def copied_in_another_lane(verdicts: list[CopyVerdict], module: str, teacher: str) -> CopyVerdict | None:
    """Another lane's verdict on this teacher, unless this lane has its own: its next run sends the
    requests of the run that stopped, which the teacher's kept answers cover at no cost."""
    on_teacher = [verdict for verdict in verdicts if verdict.teacher == teacher]
    if any(verdict.module == module for verdict in on_teacher):
        return None
    return on_teacher[0] if on_teacher else None


def update_copy_verdict(
    artifacts: ArtifactStore, tenant_id: str, module: str, teacher: str, report: GenerationReport
) -> None:
    """A lane the teacher stops by copying writes its own verdict, kept as the first stop wrote it.
    An accepted request shows that the teacher can write for this tenant, and clears every lane's."""
    if report.accepted:
        for path in verdict_paths(artifacts, tenant_id):
            verdict = read_verdict(artifacts, path)
            if verdict is not None and verdict.teacher == teacher:
                path.unlink(missing_ok=True)
        return
    own = artifacts.path(tenant_id, module, COPY_VERDICT_FILE)
    verdict = read_verdict(artifacts, own)
    if report.stopped and (verdict is None or verdict.teacher != teacher):
        artifacts.write_json(own, CopyVerdict(teacher, module, report.consecutive_copies).to_json())


def build_synthetic_examples(spec: RoutingModuleSpec) -> dg.AssetsDefinition:
    @lane_asset(
        spec,
        "synthetic_examples",
        after=("routing_traces",),
        retry_policy=EXTERNAL_CALL_RETRY,
        kinds={"dspy", "parquet"},
        description=f"Reads the `{spec.name}` example table and the content backend; writes synthetic "
        "examples (teacher LM, validated) when the blending plan asks for them.",
    )
    def synthetic_examples(
        context: dg.AssetExecutionContext,
        config_store: ConfigStoreResource,
        artifacts: ArtifactStore,
        content: ContentBackendResource,
        lm: LanguageModelResource,
    ) -> dg.MaterializeResult:
        config = tenant_config(config_store, context.partition_key)
        real = labeled_real(artifacts, config.tenant_id, spec.name)
        plan = blend_plan(len(real), config)
        stored = artifacts.read_table(config.tenant_id, spec.name, SYNTHETIC_TABLE)
        stored = stored if stored is not None else pd.DataFrame(columns=SYNTHETIC_COLUMNS)
        wanted = plan.synthetic_needed
        missing = max(0, wanted - len(stored))
        metadata = {
            "strategy": plan.strategy,
            "plan_reason": plan.reason,
            "requested": wanted,
            "stored_before": len(stored),
        }
        if not config.use_synthetic_data or wanted == 0:
            reason = "use_synthetic_data is off" if not config.use_synthetic_data else f"not needed: {plan.reason}"
            artifacts.write_table(config.tenant_id, spec.name, SYNTHETIC_TABLE, stored.iloc[0:0])
            return dg.MaterializeResult(
                metadata={**metadata, "generated": 0, "total": 0, "reason": reason, "lm_calls": 0}
            )
        if missing == 0:
            return dg.MaterializeResult(
                metadata={
                    **metadata,
                    "generated": 0,
                    "total": len(stored),
                    "reason": "stored examples suffice",
                    "lm_calls": 0,
                }
            )
        teacher, adapter = lm.teacher(), lm.adapter()
        earlier = read_teacher_answers(artifacts, config.tenant_id, spec.name)
        answers = TeacherAnswers.for_teacher(teacher, adapter, earlier)
        key = teacher_key(teacher, adapter)
        copied_elsewhere = copied_in_another_lane(read_copy_verdicts(artifacts, config.tenant_id), spec.name, key)
        generator = SyntheticQueryGenerator(
            spec,
            content.backend(),
            teacher,
            adapter,
            seed=len(stored),
            answers=answers,
            copied_elsewhere=copied_elsewhere,
        )
        attempts = missing + math.ceil(missing * GENERATION_MARGIN)
        fresh, report = generator.generate(attempts, avoid_queries=[*real["query"], *stored["query"]])
        if answers is not None:
            artifacts.write_json(artifacts.path(config.tenant_id, spec.name, TEACHER_ANSWERS_FILE), answers.to_json())
        update_copy_verdict(artifacts, config.tenant_id, spec.name, key, report)
        combined = pd.concat([stored, fresh], ignore_index=True) if len(stored) else fresh
        path = artifacts.write_table(config.tenant_id, spec.name, SYNTHETIC_TABLE, combined)
        context.log.info(f"{config.tenant_id}/{spec.name}: generated {report.accepted}/{attempts} synthetic examples")
        if report.stopped:
            context.log.warning(f"{config.tenant_id}/{spec.name}: synthetic generation stopped: {report.stopped}")
        return dg.MaterializeResult(
            metadata={
                **metadata,
                "generated": report.accepted,
                "total": len(combined),
                "reason": plan.reason,
                "rejected": dg.MetadataValue.json(report.rejected),
                "stopped": report.stopped or "",
                "teacher_copied_in": copied_elsewhere.module if copied_elsewhere else "",
                "lm_calls": report.lm_calls,
                "copy_probes": report.copy_probes,
                "remembered_answers": report.remembered,
                "generation_seconds": round(report.seconds, 1),
                "per_label": dg.MetadataValue.json({k: int(v) for k, v in combined["label"].value_counts().items()}),
                "per_augmentation": dg.MetadataValue.json(
                    {k: int(v) for k, v in combined["augmentation"].value_counts().items()}
                ),
                "table": dg.MetadataValue.path(path),
            }
        )

    return synthetic_examples


synthetic_examples_assets = [build_synthetic_examples(spec) for spec in ROUTING_MODULES.values()]
