"""athena: OLMoE for a memory-managing agent.

``OLMoEModel.load()`` tries MLX first when ``use_mlx`` is set and MLX is available, else the
trainable candle path, which attaches a ``MemoryActionHead``. ``encode`` gives pooled hidden
states on either path; ``act`` runs the head; ``generate`` and ``stream_generate`` produce
text. ``MemoryBank`` keeps an agent's memories (mem0's methods and dicts) and ``train_head``
trains the head. Errors are ``AthenaUserError`` (a ``ValueError``) for the caller's mistakes
and ``AthenaError`` (a ``RuntimeError``) for the rest. Log records go to the ``athena`` logger.
"""

from athena._athena import (
    AthenaError,
    AthenaUserError,
    GenerationStream,
    MemoryActionHead,
    MemoryBank,
    OLMoEConfig,
    OLMoEModel,
    Tokenizer,
    __version__,
    mlx_unavailable_reason,
    train_head,
)

__all__ = [
    "AthenaError",
    "AthenaUserError",
    "GenerationStream",
    "MemoryActionHead",
    "MemoryBank",
    "OLMoEConfig",
    "OLMoEModel",
    "Tokenizer",
    "__version__",
    "mlx_unavailable_reason",
    "train_head",
]
