"""The evaluation's pictures: side-by-side confusion matrices and the accuracy-over-versions plot,
as PNGs that the Dagster UI shows inline."""

import base64

import pandas as pd

from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.reports import accuracy_over_versions_png, confusion_png, markdown_image
from cogniverse_assets.scoring import score_examples
from cogniverse_resources.config_store import DeploymentRecord

SPEC = get_module("modality")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _scores(predicted):
    gold = ["video", "image", "audio", "document", "text"] * 2
    return score_examples(SPEC, gold, predicted, [1.0] * len(gold), lm_calls=len(gold))


def test_markdown_metadata_holds_the_image_itself():
    candidate, deployed = _scores(["video"] * 10), _scores(["video", "image", "audio", "document", "text"] * 2)
    single, pair = confusion_png(SPEC, candidate), confusion_png(SPEC, candidate, deployed)
    assert single.startswith(PNG_MAGIC) and pair.startswith(PNG_MAGIC) and len(pair) > len(single)
    markdown = markdown_image(pair, "candidate and deployed")
    assert markdown.startswith("![candidate and deployed](data:image/png;base64,")
    assert base64.b64decode(markdown.split(",", 1)[1].rstrip(")")) == pair


def test_accuracy_plot_marks_promotions_and_rollbacks():
    history = pd.DataFrame(
        {
            "version": ["v1", "v2", "v3"],
            "candidate_accuracy": [0.6, 0.7, 0.65],
            "deployed_accuracy_eval": [0.5, 0.6, 0.7],
        }
    )
    plain = accuracy_over_versions_png(SPEC, history)
    deployments = [
        DeploymentRecord("t", "modality", "v1", "promote", "test"),
        DeploymentRecord("t", "modality", "v2", "promote", "test"),
        DeploymentRecord("t", "modality", "v1", "rollback", "ops", previous_version="v2"),
    ]
    marked = accuracy_over_versions_png(SPEC, history, deployments)
    assert plain.startswith(PNG_MAGIC) and marked.startswith(PNG_MAGIC) and marked != plain
