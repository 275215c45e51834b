"""DSPy signatures of the three routers; their docstrings and field descriptions are the prompts."""

from typing import Literal

import dspy

from cogniverse_resources import trace_contract as tc

Modality = Literal[tc.MODALITIES]  # type: ignore[valid-type]
FusionStrategy = Literal[tc.FUSION_STRATEGIES]  # type: ignore[valid-type]
Agent = Literal[tc.AGENTS]  # type: ignore[valid-type]


class ModalitySignature(dspy.Signature):
    """Decide which kind of content a multimodal search query is looking for."""

    query: str = dspy.InputField(desc="the user's search query")
    modality: Modality = dspy.OutputField(
        desc="video (clips, recordings, footage), image (photos, pictures, diagrams), audio (podcasts, "
        "music, calls), document (PDFs, papers, reports, manuals, slides) or text (articles, posts, definitions)"
    )


class CrossModalSignature(dspy.Signature):
    """Decide whether answering the query needs results fused across modalities, and how."""

    query: str = dspy.InputField(desc="the user's search query")
    detected_modalities: list[str] = dspy.InputField(desc="modalities the query mentions or implies")
    needs_fusion: bool = dspy.OutputField(desc="true when results from two or more modalities must be combined")
    fusion_strategy: FusionStrategy = dspy.OutputField(
        desc="none (one modality is enough), rrf (broad recall across sources, no preference), "
        "weighted (one modality is primary, others support it) or maxsim (match a specific detail or "
        "moment across modalities)"
    )


class RoutingSignature(dspy.Signature):
    """Choose the agent that should handle the user's request."""

    query: str = dspy.InputField(desc="the user's request")
    entities: list[str] = dspy.InputField(desc="named entities and key phrases found in the query")
    agent: Agent = dspy.OutputField(
        desc="video_search_agent, image_search_agent, audio_analysis_agent, document_agent, "
        "text_search_agent, summarizer_agent (summaries, recaps, key points) or detailed_report_agent "
        "(in-depth analysis, reports, comparisons)"
    )
