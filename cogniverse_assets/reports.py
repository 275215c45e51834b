"""What an evaluation shows a person: the candidate-vs-deployed table (markdown) and its plots
(confusion matrix, accuracy over versions) as PNG bytes."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import pandas as pd

from cogniverse_assets.modules.registry import RoutingModuleSpec
from cogniverse_assets.scoring import Scores
from cogniverse_resources.config_store import DeploymentRecord


def comparison_markdown(candidate: Scores, deployed: Scores, candidate_version: str, deployed_version: str) -> str:
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


def _png(figure) -> bytes:  # noqa: ANN001 - a matplotlib figure
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # steps run headless
    import matplotlib.pyplot as plt

    return plt


def confusion_png(spec: RoutingModuleSpec, candidate: Scores, deployed: Scores | None = None) -> bytes:
    """The candidate's confusion matrix, with the deployed module's beside it when given."""
    plt = _pyplot()
    labels = list(spec.labels)
    panels = [("candidate", candidate)] + ([("deployed", deployed)] if deployed is not None else [])
    size = 1.1 * len(labels) + 2
    figure, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size - 0.5), squeeze=False)
    for axis, (title, scores) in zip(axes[0], panels):
        matrix = [[scores.confusion[truth][guess] for guess in labels] for truth in labels]
        axis.imshow(matrix, cmap="Blues")
        axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        axis.set_yticks(range(len(labels)), labels)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                axis.text(j, i, str(value), ha="center", va="center")
        axis.set_title(f"{spec.name}: {title} (accuracy {scores.accuracy:.3f})")
    png = _png(figure)
    plt.close(figure)
    return png


def accuracy_over_versions_png(
    spec: RoutingModuleSpec, history: pd.DataFrame, deployments: Sequence[DeploymentRecord] = ()
) -> bytes:
    """Candidate and deployed accuracy per evaluated version; promoted versions are starred, versions
    rolled back from are marked with a red cross."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 3.2))
    positions = range(len(history))
    versions = [str(version) for version in history["version"]]
    axis.plot(positions, history["candidate_accuracy"], marker="o", label="candidate")
    axis.plot(positions, history["deployed_accuracy_eval"], marker="x", label="deployed (baseline)")
    promoted = {record.version for record in deployments if record.action == "promote"}
    rolled_back = {record.previous_version for record in deployments if record.action == "rollback"}
    accuracies = list(history["candidate_accuracy"])
    markers = (
        ("promoted", promoted, {"marker": "*", "s": 220, "color": "gold", "edgecolors": "black", "zorder": 3}),
        ("rolled back", rolled_back, {"marker": "X", "s": 120, "color": "red", "zorder": 4}),
    )
    for label, marked, style in markers:  # one scatter per kind, so the legend lists each kind once
        indices = [index for index, version in enumerate(versions) if version in marked]
        if indices:
            axis.scatter(indices, [accuracies[index] for index in indices], label=label, **style)
    axis.set_xticks(list(positions), [version[:15] for version in versions], rotation=45, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("validation accuracy")
    axis.legend(fontsize="small")
    axis.set_title(f"{spec.name}: accuracy over versions")
    png = _png(figure)
    plt.close(figure)
    return png


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows the PNG inline (the Dagster UI renders data URIs in markdown metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
