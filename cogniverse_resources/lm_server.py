"""The local LM server: ``llama_cpp.server`` with a prompt-state cache whose memory stays bounded.

``python -m cogniverse_resources.lm_server`` takes ``llama_cpp.server``'s arguments. Two lanes on
one server take turns (two tenants' runs, or a run next to the sensor's LLM annotations). Alone,
llama.cpp keeps only the last prompt's KV state, so each turn evaluates the other lane's demo
prefix again: measured here, calls taking turns took 9.5 s each against 2.6 s for the same calls
one lane at a time; this server answers them in 2.1 s (``bench/lm_server.py``, docs/benchmarks.md,
"Local LM server"). With ``--cache`` the server keeps KV states by token prefix and each lane
resumes its own.

Stock ``LlamaRAMCache`` is unsafe here: ``Llama.save_state`` also copies the logits of up to
``n_batch`` evaluated tokens (512 × 151,936 floats, about 300 MB for this model), and the cache's
capacity counts only the KV bytes, so a 256 MB cache grew the server to 6.4 GB. A restored state
always decodes at least one token before sampling (``Llama._requires_eval``), so those logits are
never read again: ``PromptStateCache`` keeps only the last row.
"""

from __future__ import annotations

from typing import Sequence

import llama_cpp
from llama_cpp.llama_cache import LlamaRAMCache


class PromptStateCache(LlamaRAMCache):
    """``LlamaRAMCache`` that drops the stored logits a restore never reads."""

    def __setitem__(self, key: Sequence[int], value: llama_cpp.LlamaState) -> None:
        # One row, not none: Llama.load_state broadcasts it into its logits buffer.
        value.scores = value.scores[-1:].copy()
        super().__setitem__(key, value)


def main() -> None:
    from llama_cpp.server.__main__ import main as serve

    # llama_cpp.server.model builds its RAM cache as ``llama_cpp.LlamaRAMCache(...)`` when it loads
    # the model; there is no setting for the cache class.
    llama_cpp.LlamaRAMCache = PromptStateCache
    serve()


if __name__ == "__main__":
    main()
