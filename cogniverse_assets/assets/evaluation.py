"""``<module>/evaluation``, its blocking ``promotion_gate`` check, and ``<module>/deployment``.

evaluation: reads the candidate module version and the training set's validation split (which no
optimizer saw); scores the candidate and the deployed module (or the unoptimized one) on the same
split; writes ``evaluation.json``, a confusion-matrix image and an accuracy-over-versions plot,
logs the split as a Phoenix dataset and one experiment per module, and appends the outcome to the
optimization history.

promotion_gate (blocking): passes only if the candidate beats the deployed module by the tenant's
``promotion_min_gain``,
with a paired bootstrap interval above zero on large splits, and loses no class more than
``promotion_max_class_recall_drop`` recall.

deployment: moves the tenant × module deployment pointer in the config store (runs only when the
gate passed, and re-checks the decision itself).
"""

import io
from datetime import datetime, timezone

import dagster as dg
import pandas as pd

from cogniverse_resources.artifacts import ArtifactStore, write_bytes_atomic
from cogniverse_resources.config_store import ConfigStoreResource, DeploymentRecord
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.phoenix import PhoenixResource
from cogniverse_assets.assets.lane import lane_asset, stage_key
from cogniverse_assets.assets.routing_traces import EXTERNAL_CALL_RETRY, tenant_config
from cogniverse_assets.assets.training_set import TRAINING_SET_TABLE
from cogniverse_assets.history import append_outcome, read_history
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec
from cogniverse_assets.optimizers import to_examples
from cogniverse_assets.runtime import UNOPTIMIZED_VERSION, deployed_program
from cogniverse_assets.scoring import Scores, promotion_decision, score_program

EVALUATION_FILE = "evaluation.json"


def _markdown(candidate: Scores, deployed: Scores, candidate_version: str, deployed_version: str) -> str:
    lines = [
        "| | candidate | deployed |",
        "|---|---|---|",
        f"| version | `{candidate_version}` | `{deployed_version}` |",
        f"| accuracy | {candidate.accuracy:.3f} | {deployed.accuracy:.3f} |",
        f"| macro-F1 | {candidate.macro_f1:.3f} | {deployed.macro_f1:.3f} |",
        f"| mean latency (ms) | {candidate.mean_latency_ms:.0f} | {deployed.mean_latency_ms:.0f} |",
        f"| LM calls | {candidate.lm_calls} | {deployed.lm_calls} |",
    ]
    for label, stats in candidate.per_class.items():
        other = deployed.per_class[label]
        lines.append(f"| recall `{label}` (n={stats['support']}) | {stats['recall']:.2f} | {other['recall']:.2f} |")
    return "\n".join(lines)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _plots(spec: RoutingModuleSpec, candidate: Scores, history: pd.DataFrame) -> tuple[bytes, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(spec.labels)
    matrix = [[candidate.confusion[truth][guess] for guess in labels] for truth in labels]
    figure, axis = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.0 * len(labels) + 1.5))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axis.text(j, i, str(value), ha="center", va="center")
    axis.set_title(f"{spec.name}: candidate confusion matrix")
    confusion_png = _png(figure)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 3))
    axis.plot(range(len(history)), history["candidate_accuracy"], marker="o", label="candidate")
    axis.plot(range(len(history)), history["deployed_accuracy_eval"], marker="x", label="deployed")
    axis.set_xticks(range(len(history)), [str(v)[:15] for v in history["version"]], rotation=45, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("validation accuracy")
    axis.legend()
    axis.set_title(f"{spec.name}: accuracy over versions")
    versions_png = _png(figure)
    plt.close(figure)
    return confusion_png, versions_png


def _log_to_phoenix(phoenix: PhoenixResource, tenant_id: str, spec: RoutingModuleSpec, validation: pd.DataFrame, runs: dict[str, Scores]) -> dict[str, str]:
    """The validation split as a (versioned) Phoenix dataset and one experiment per scored module."""
    client = phoenix.client()
    name = f"{phoenix.project_name(tenant_id)}-{spec.name}-validation"
    rows = [{"input": {"query": q}, "output": {"label": label}} for q, label in zip(validation["query"], validation["label"])]
    try:
        dataset = client.datasets.get_dataset(dataset=name)
        known = {example["input"]["query"] for example in dataset.examples}
        fresh = [row for row in rows if row["input"]["query"] not in known]
        if fresh:
            dataset = client.datasets.add_examples_to_dataset(dataset=name, examples=fresh)
    except Exception:  # noqa: BLE001 - the client raises a plain error for a missing dataset
        dataset = client.datasets.create_dataset(name=name, examples=rows, dataset_description=f"{tenant_id} {spec.name} real validation split")
    urls = {}
    for role, scores in runs.items():
        answers = dict(zip(validation["query"], scores.predictions))
        experiment = client.experiments.run_experiment(
            dataset=dataset,
            task=lambda input, answers=answers: {"label": answers.get(input["query"])},
            evaluators={"exact_match": lambda output, expected: float(output["label"] == expected["label"])},
            experiment_name=f"{spec.name}-{role}",
            experiment_metadata={"tenant": tenant_id, "module": spec.name, "role": role},
            print_summary=False,
        )
        urls[role] = f"{phoenix.endpoint.rstrip('/')}/datasets/{experiment['dataset_id']}/compare?experimentId={experiment['experiment_id']}"
    return urls


def build_evaluation(spec: RoutingModuleSpec) -> dg.AssetsDefinition:
    @lane_asset(
        spec, "evaluation", after=("training_set",),
        ins={"candidate": dg.AssetIn(key=stage_key(spec, "trained_module"))},
        retry_policy=EXTERNAL_CALL_RETRY,
        kinds={"dspy", "phoenix"},
        description=f"Scores the `{spec.name}` candidate and the deployed module on the real validation "
        "split; writes evaluation.json, plots, a Phoenix dataset + experiments and a history row.",
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
        table = artifacts.read_table(config.tenant_id, spec.name, TRAINING_SET_TABLE)
        validation = table[table["split"] == "validation"].reset_index(drop=True)
        examples = to_examples(spec, validation)
        student, adapter = lm.student(), lm.adapter()
        deployed_version, deployed = deployed_program(config_store.store(), artifacts, config.tenant_id, spec)
        candidate_scores = score_program(spec, spec.load_program(candidate), examples, student, adapter)
        deployed_scores = score_program(spec, deployed, examples, student, adapter)
        promote, reasons, figures = promotion_decision(
            candidate_scores, deployed_scores, config.promotion_min_gain, config.promotion_max_class_recall_drop
        )

        record = {
            "tenant_id": config.tenant_id, "module": spec.name,
            "candidate_version": candidate["version"], "deployed_version": deployed_version,
            "candidate": candidate_scores.summary(), "deployed": deployed_scores.summary(),
            "promote": promote, "reasons": reasons, "figures": figures, "validation_size": len(validation),
            "evaluated_at": datetime.now(timezone.utc).isoformat(),
        }
        path = artifacts.write_json(artifacts.path(config.tenant_id, spec.name, EVALUATION_FILE), record)
        append_outcome(artifacts, {
            "tenant_id": config.tenant_id, "module": spec.name, "version": candidate["version"], "optimizer": candidate["optimizer"],
            **candidate["plan"]["features"], "gain": candidate_scores.accuracy - deployed_scores.accuracy,
            "lm_calls": candidate["lm_calls"], "wall_time_s": candidate["wall_time_s"],
            "candidate_accuracy": candidate_scores.accuracy, "deployed_accuracy_eval": deployed_scores.accuracy,
            "recorded_at": record["evaluated_at"],
        })
        history = read_history(artifacts)
        history = history[(history["tenant_id"] == config.tenant_id) & (history["module"] == spec.name)]
        confusion_png, versions_png = _plots(spec, candidate_scores, history)
        confusion_path = artifacts.path(config.tenant_id, spec.name, "plots", f"confusion-{candidate['version']}.png")
        versions_path = artifacts.path(config.tenant_id, spec.name, "plots", "accuracy-over-versions.png")
        write_bytes_atomic(confusion_path, confusion_png)
        write_bytes_atomic(versions_path, versions_png)
        urls = _log_to_phoenix(phoenix.for_tenant(config.phoenix_endpoint), config.tenant_id, spec, validation, {"candidate": candidate_scores, "deployed": deployed_scores})
        return dg.MaterializeResult(metadata={
            "comparison": dg.MetadataValue.md(_markdown(candidate_scores, deployed_scores, candidate["version"], deployed_version)),
            "candidate_accuracy": round(candidate_scores.accuracy, 4),
            "deployed_accuracy": round(deployed_scores.accuracy, 4),
            "candidate_macro_f1": round(candidate_scores.macro_f1, 4),
            "gain": figures["gain"],
            "promote": promote,
            "reasons": dg.MetadataValue.json(reasons),
            "validation_size": len(validation),
            "lm_calls": candidate_scores.lm_calls + deployed_scores.lm_calls,
            "confusion_matrix": dg.MetadataValue.path(str(confusion_path)),
            "accuracy_over_versions": dg.MetadataValue.path(str(versions_path)),
            "phoenix_experiment_candidate": dg.MetadataValue.url(urls["candidate"]),
            "phoenix_experiment_deployed": dg.MetadataValue.url(urls["deployed"]),
            "evaluation": dg.MetadataValue.path(path),
        })

    @dg.asset_check(asset=evaluation, name="promotion_gate", blocking=True, description="Candidate beats the deployed module on the validation split (margin, bootstrap interval, no class collapse).")
    def promotion_gate(context: dg.AssetCheckExecutionContext, artifacts: ArtifactStore) -> dg.AssetCheckResult:
        tenant_id = context.partition_key if context.has_partition_key else None
        record = artifacts.read_json(artifacts.path(tenant_id, spec.name, EVALUATION_FILE))
        return dg.AssetCheckResult(
            passed=bool(record and record["promote"]),
            metadata={"reasons": dg.MetadataValue.json(record["reasons"] if record else ["no evaluation"]),
                      "candidate_version": record["candidate_version"] if record else "-"},
        )

    return evaluation, promotion_gate


def build_deployment(spec: RoutingModuleSpec) -> dg.AssetsDefinition:
    @lane_asset(
        spec, "deployment", after=("evaluation",),
        kinds={"dspy"},
        description=f"Moves the tenant's `{spec.name}` deployment pointer to the evaluated candidate "
        "(only after the promotion gate passed).",
    )
    def deployment(context: dg.AssetExecutionContext, config_store: ConfigStoreResource, artifacts: ArtifactStore) -> dg.MaterializeResult:
        tenant_id = context.partition_key
        record = artifacts.read_json(artifacts.path(tenant_id, spec.name, EVALUATION_FILE))
        if not record or not record["promote"]:
            raise dg.Failure(f"refusing to deploy {spec.name} for {tenant_id}: the evaluation did not pass the promotion gate", allow_retries=False)
        store = config_store.store()
        current = store.deployed(tenant_id, spec.name)
        store.record_deployment(DeploymentRecord(
            tenant_id=tenant_id, module=spec.name, version=record["candidate_version"], action="promote",
            actor=f"dagster run {context.run.run_id[:8]}", reason="; ".join(record["reasons"]),
            score=record["candidate"]["accuracy"], previous_version=current.version if current else UNOPTIMIZED_VERSION,
        ))
        return dg.MaterializeResult(metadata={
            "deployed_version": record["candidate_version"],
            "previous_version": current.version if current else UNOPTIMIZED_VERSION,
            "accuracy": record["candidate"]["accuracy"],
        })

    return deployment


_evaluations = [build_evaluation(spec) for spec in ROUTING_MODULES.values()]
evaluation_assets = [asset for asset, _ in _evaluations]
promotion_gate_checks = [check for _, check in _evaluations]
deployment_assets = [build_deployment(spec) for spec in ROUTING_MODULES.values()]
