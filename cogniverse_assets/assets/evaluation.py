"""``<module>/evaluation`` with its blocking ``promotion_gate`` check.

Reads the candidate module version and the training set's validation split (which no optimizer
saw); scores the candidate and the deployed module (or the unoptimized one) on the same split,
asking the LM only about examples that version has not answered before, in an evaluation or in
production under the same program key (``answer_memory.py``);
writes ``evaluation.json``, a confusion-matrix image and an accuracy-over-versions plot, logs the
split as a Phoenix dataset and one experiment per module, and appends the outcome to the
optimization history.

The promotion gate is declared on this asset and decided in its body (no second step reading the
record back): it passes only if the candidate beats the deployed module by the tenant's
``promotion_min_gain``, with a paired bootstrap interval above zero on large splits, and loses no
class more than ``promotion_max_class_recall_drop`` recall. Being blocking, a failed gate stops
``<module>/deployment`` from running.
"""

from datetime import datetime, timezone

import dagster as dg
from upath import UPath

from cogniverse_assets.answer_memory import AnswerMemory, forget_other_versions, served_answers
from cogniverse_assets.assets.lane import EXTERNAL_CALL_RETRY, lane_asset, stage_key, tenant_config
from cogniverse_assets.assets.training_set import TRAINING_SET_TABLE, validation_source_of
from cogniverse_assets.history import append_outcome, read_history
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec
from cogniverse_assets.optimizers import to_examples
from cogniverse_assets.records import EvaluationRecord, ModuleVersion
from cogniverse_assets.reports import accuracy_over_versions_png, comparison_markdown, confusion_png, markdown_image
from cogniverse_assets.runtime import deployed_module, module_from_payload
from cogniverse_assets.scoring import promotion_decision, score_cascade
from cogniverse_resources.artifacts import ArtifactStore, write_bytes_atomic
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.phoenix import PhoenixResource

EVALUATION_FILE = "evaluation.json"
PROMOTION_GATE = "promotion_gate"


def evaluation_path(artifacts: ArtifactStore, tenant_id: str, module: str) -> UPath:
    return artifacts.path(tenant_id, module, EVALUATION_FILE)


def module_version_path(artifacts: ArtifactStore, version: ModuleVersion) -> UPath:
    return artifacts.path(version.tenant_id, version.module, "modules", f"{version.version}.json")


def read_evaluation(artifacts: ArtifactStore, tenant_id: str, module: str) -> EvaluationRecord | None:
    payload = artifacts.read_json(evaluation_path(artifacts, tenant_id, module))
    return EvaluationRecord.model_validate(payload) if payload else None


def build_evaluation(spec: RoutingModuleSpec) -> dg.AssetsDefinition:
    @lane_asset(
        spec,
        "evaluation",
        after=("training_set",),
        ins={"candidate": dg.AssetIn(key=stage_key(spec, "trained_module"))},
        retry_policy=EXTERNAL_CALL_RETRY,
        kinds={"dspy", "phoenix"},
        check_specs=[
            dg.AssetCheckSpec(
                PROMOTION_GATE,
                asset=stage_key(spec, "evaluation"),
                blocking=True,
                description="Candidate beats the deployed module on the validation split (margin, bootstrap interval, "
                "no class collapse).",
            )
        ],
        description=f"Scores the `{spec.name}` candidate and the deployed module on the real validation "
        "split; writes evaluation.json, plots, a Phoenix dataset + experiments and a history row; "
        "decides the blocking promotion gate.",
    )
    def evaluation(
        context: dg.AssetExecutionContext,
        candidate: dict,
        config_store: ConfigStoreResource,
        artifacts: ArtifactStore,
        lm: LanguageModelResource,
        phoenix: PhoenixResource,
    ) -> dg.MaterializeResult:
        config = tenant_config(config_store, context.partition_key)
        version = ModuleVersion.model_validate(candidate)
        table = artifacts.read_table(config.tenant_id, spec.name, TRAINING_SET_TABLE)
        validation = table[table["split"] == "validation"].reset_index(drop=True)
        examples = to_examples(spec, validation)
        student = lm.student()
        deployed = deployed_module(config_store.store(), artifacts, config.tenant_id, spec)
        deployed_version = deployed.version
        new = module_from_payload(spec, candidate)
        inputs = [dict(example.inputs()) for example in examples]
        served = served_answers(spec, validation.to_dict("records"))
        runs, memories = [], []
        for side_version, side in ((version.version, new), (deployed_version, deployed)):
            # Each side with the prompt layout it is (or would be) served with.
            adapter = lm.adapter(side.prompt_layout)
            memory = AnswerMemory.open(artifacts, config.tenant_id, spec, side_version, side.program, student, adapter)
            memory.take_served(inputs, served)
            runs.append(score_cascade(spec, side.program, side.fast_path, examples, student, adapter, memory=memory))
            memory.save(artifacts)
            memories.append(memory)
        candidate_run, deployed_run = runs
        forget_other_versions(artifacts, config.tenant_id, spec.name, keep={version.version, deployed_version})
        if new.fast_path is not None and not candidate_run.fast_path_kept:
            # The version is not deployed yet: store it without the fast path that lost here.
            version = version.model_copy(update={"fast_path": None, "fast_path_reason": candidate_run.note})
            artifacts.write_json(module_version_path(artifacts, version), version.model_dump())
        # Both sides are scored as they would be served (cascade where a fast path is kept).
        candidate_scores, deployed_scores = candidate_run.served, deployed_run.served
        promote, reasons, figures = promotion_decision(
            candidate_scores,
            deployed_scores,
            config.promotion_min_gain,
            config.promotion_max_class_recall_drop,
            validation_source=validation_source_of(table),
        )
        figures["candidate_lm_only_accuracy"] = round(candidate_run.lm_only.accuracy, 4)
        figures["fast_path"] = candidate_run.note

        record = EvaluationRecord(
            tenant_id=config.tenant_id,
            module=spec.name,
            candidate_version=version.version,
            deployed_version=deployed_version,
            candidate=candidate_scores.summary(),
            deployed=deployed_scores.summary(),
            promote=promote,
            reasons=reasons,
            figures=figures,
            validation_size=len(validation),
            evaluated_at=datetime.now(timezone.utc).isoformat(),
        )
        path = artifacts.write_json(evaluation_path(artifacts, config.tenant_id, spec.name), record.model_dump())
        append_outcome(
            artifacts,
            {
                "tenant_id": config.tenant_id,
                "module": spec.name,
                "version": version.version,
                "optimizer": version.optimizer,
                **version.plan.features,
                "gain": candidate_scores.accuracy - deployed_scores.accuracy,
                "lm_calls": version.lm_calls,
                "wall_time_s": version.wall_time_s,
                "candidate_accuracy": candidate_scores.accuracy,
                "deployed_accuracy_eval": deployed_scores.accuracy,
                "recorded_at": record.evaluated_at,
            },
        )
        history = read_history(artifacts)
        history = history[(history["tenant_id"] == config.tenant_id) & (history["module"] == spec.name)]
        confusion_path = artifacts.path(config.tenant_id, spec.name, "plots", f"confusion-{version.version}.png")
        versions_path = artifacts.path(config.tenant_id, spec.name, "plots", "accuracy-over-versions.png")
        confusion = confusion_png(spec, candidate_scores, deployed_scores)
        versions_plot = accuracy_over_versions_png(
            spec, history, config_store.store().deployment_history(config.tenant_id, spec.name)
        )
        write_bytes_atomic(confusion_path, confusion)
        write_bytes_atomic(versions_path, versions_plot)
        urls = phoenix.for_tenant(config.phoenix_endpoint, config.phoenix_api_key_env).log_evaluation(
            config.tenant_id,
            spec.name,
            list(validation["query"]),
            list(validation["label"]),
            {"candidate": candidate_scores.predictions, "deployed": deployed_scores.predictions},
        )
        gate = dg.AssetCheckResult(
            check_name=PROMOTION_GATE,
            passed=promote,
            metadata={"reasons": dg.MetadataValue.json(reasons), "candidate_version": version.version},
        )
        return dg.MaterializeResult(
            metadata={
                "comparison": dg.MetadataValue.md(
                    comparison_markdown(candidate_scores, deployed_scores, version.version, deployed_version)
                ),
                "candidate_accuracy": round(candidate_scores.accuracy, 4),
                "deployed_accuracy": round(deployed_scores.accuracy, 4),
                "candidate_macro_f1": round(candidate_scores.macro_f1, 4),
                "candidate_lm_only_accuracy": round(candidate_run.lm_only.accuracy, 4),
                "fast_path": candidate_run.note,
                "fast_path_share": round(candidate_scores.fast_path_share, 4),
                "gain": figures["gain"],
                "gain_interval_90": dg.MetadataValue.json(figures.get("interval")),
                "mcnemar_p": figures["mcnemar_p"],
                "promote": promote,
                "reasons": dg.MetadataValue.json(reasons),
                "validation_size": len(validation),
                "lm_calls": candidate_scores.lm_calls + deployed_scores.lm_calls,
                "remembered_answers": sum(memory.recalled for memory in memories),
                "answers_taken_from_serving": sum(memory.taken_from_serving for memory in memories),
                "confusion_matrices": dg.MetadataValue.md(markdown_image(confusion, "candidate and deployed")),
                "accuracy_over_versions": dg.MetadataValue.md(markdown_image(versions_plot, "accuracy over versions")),
                "confusion_matrix_file": dg.MetadataValue.path(str(confusion_path)),
                "accuracy_over_versions_file": dg.MetadataValue.path(str(versions_path)),
                "phoenix_experiment_candidate": dg.MetadataValue.url(urls["candidate"]),
                "phoenix_experiment_deployed": dg.MetadataValue.url(urls["deployed"]),
                "evaluation": dg.MetadataValue.path(path),
            },
            check_results=[gate],
        )

    return evaluation


evaluation_assets = [build_evaluation(spec) for spec in ROUTING_MODULES.values()]
