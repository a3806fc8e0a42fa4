"""Type stubs of the athena module (the extension ``athena._athena``)."""

import os
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, "os.PathLike[str]"]

class AthenaUserError(ValueError):
    """The caller's mistake: bad input, a missing or malformed file, an unavailable device."""

class AthenaError(RuntimeError):
    """A failure that is not the caller's doing: a tensor operation, a store, a bug."""

def mlx_unavailable_reason() -> Optional[str]:
    """Why MLX cannot run in this build, or None when it can."""

class OLMoEConfig:
    """What the caller asks of OLMoEModel; the fields of athena's OlmoeConfig."""

    def __init__(
        self,
        model_name: Optional[str] = None,
        *,
        use_mlx: Optional[bool] = None,
        mlx_model_path: Optional[str] = None,
        quantization: Optional[Literal["none", "8bit", "4bit"]] = None,
        lora_path: Optional[_Path] = None,
        merge_lora: Optional[bool] = None,
        int8_activations: Optional[bool] = None,
        device: Optional[Literal["auto", "cpu", "cuda", "metal"]] = None,
        dtype: Optional[Literal["f32", "bf16", "f16"]] = None,
        pooling: Optional[str] = None,
        encode_batch_tokens: Optional[int] = None,
        action_head: Optional[Dict[str, Any]] = None,
        action_head_path: Optional[_Path] = None,
    ) -> None:
        """A configuration; a keyword left at None keeps the field's default."""
    @classmethod
    def from_file(cls, path: _Path) -> "OLMoEConfig":
        """Reads a .toml or .json configuration file."""
    @property
    def model_name(self) -> str:
        """Hub id or local directory of the checkpoint."""
    @property
    def use_mlx(self) -> bool:
        """Whether MLX is tried first."""
    @property
    def mlx_model_path(self) -> Optional[str]:
        """The checkpoint of the MLX path (None: model_name)."""
    @property
    def quantization(self) -> Optional[str]:
        """"8bit" or "4bit", or None for weights as stored."""
    @property
    def lora_path(self) -> Optional[str]:
        """The LoRA adapter directory, or None."""
    @property
    def merge_lora(self) -> bool:
        """Whether the adapter is merged into the weights."""
    @property
    def int8_activations(self) -> bool:
        """Whether quantized products run on int8 activations."""
    @property
    def device(self) -> str:
        """"auto", "cpu", "cuda" or "metal"."""
    @property
    def dtype(self) -> str:
        """"f32", "bf16" or "f16"."""
    @property
    def pooling(self) -> str:
        """How encode pools hidden states."""
    @property
    def encode_batch_tokens(self) -> int:
        """The most padded tokens one encode pass runs."""
    @property
    def action_head(self) -> Dict[str, Any]:
        """The memory action head's configuration."""
    @property
    def action_head_path(self) -> Optional[str]:
        """A trained head's directory, or None."""
    def to_dict(self) -> Dict[str, Any]:
        """Every field, as a dict."""

class MemoryActionHead:
    """A description of the memory action head attached on the candle path."""

    operations: List[str]
    target_operations: List[str]
    input_dim: int
    proj_dim: int
    seed: int
    path: Optional[str]
    @property
    def trained(self) -> bool:
        """Whether the head was loaded from a trained head's directory."""

class Tokenizer:
    """The tokenizer of a loaded OLMoEModel."""

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        """The ids of text."""
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """The text of ids."""

class GenerationStream(Iterator[str]):
    """Generated text, piece by piece; dropping it stops the generation."""

    def __iter__(self) -> "GenerationStream": ...
    def __next__(self) -> str: ...
    def close(self) -> None:
        """Stops the generation at the next token."""

class OLMoEModel:
    """OLMoE as the agent sees it: create with a config, then load()."""

    def __init__(self, config: Optional[OLMoEConfig] = None) -> None:
        """A model to be loaded according to config; nothing is read until load()."""
    def load(self) -> bool:
        """MLX first when enabled and available, else candle; False when nothing loads."""
    @property
    def config(self) -> OLMoEConfig:
        """The configuration."""
    @property
    def backend(self) -> Optional[Literal["mlx", "candle"]]:
        """The backend running the model; None before load()."""
    @property
    def is_loaded(self) -> bool:
        """Whether load() has succeeded."""
    @property
    def load_report(self) -> List[Dict[str, str]]:
        """Each backend the last load() tried or skipped: {"backend", "outcome", "reason"}."""
    @property
    def action_head(self) -> Optional[MemoryActionHead]:
        """The memory action head (candle path); None on MLX or before load()."""
    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer of the loaded model."""
    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Pooled final-norm hidden states, float32 [len(texts), hidden_size]."""
    def act(self, fact: str, memories: Sequence[Dict[str, str]]) -> Dict[str, Any]:
        """{"op", "target", "probabilities", "target_probabilities"} for fact."""
    def generate(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        min_p: Optional[float] = None,
        repetition_penalty: Optional[float] = None,
        seed: int = 0,
        stop: Optional[Sequence[str]] = None,
        stream: bool = False,
    ) -> Any:
        """The generated text (a str), or a GenerationStream with stream=True."""
    def stream_generate(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        min_p: Optional[float] = None,
        repetition_penalty: Optional[float] = None,
        seed: int = 0,
        stop: Optional[Sequence[str]] = None,
    ) -> GenerationStream:
        """The generated text, piece by piece."""

class MemoryBank:
    """An agent's memories in SQLite or PostgreSQL, with mem0's methods and dicts."""

    def __init__(
        self,
        db: str,
        model: Union[OLMoEModel, str, None] = None,
        head: Optional[_Path] = None,
        max_text_bytes: int = ...,
    ) -> None:
        """Opens the bank at db (a SQLite file or a postgres:// URL)."""
    def add(
        self,
        messages: Union[str, Sequence[str]],
        user_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        run_id: Optional[str] = None,
        metadata: Optional[Dict[str, Any]] = None,
        infer: bool = True,
    ) -> Dict[str, Any]:
        """{"results": [{"id", "event", "memory", "previous_memory"}]}."""
    def search(
        self,
        query: str,
        user_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        run_id: Optional[str] = None,
        limit: int = 10,
        threshold: Optional[float] = None,
        filters: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        """{"results": [{"id", "memory", "score", "metadata"}]}, best first."""
    def get(self, memory_id: str) -> Dict[str, Any]:
        """One memory."""
    def get_all(
        self,
        user_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        run_id: Optional[str] = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Dict[str, Any]:
        """{"results": [memory, ...]}, oldest first."""
    def update(self, memory_id: str, data: str) -> Dict[str, Any]:
        """{"message", "id", "event"}."""
    def delete(self, memory_id: str) -> Dict[str, Any]:
        """{"message", "id"}."""
    def delete_all(
        self,
        user_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        run_id: Optional[str] = None,
    ) -> Dict[str, Any]:
        """{"message", "deleted"}."""
    def history(self, memory_id: str) -> Dict[str, Any]:
        """{"results": [{"memory_id", "event", "old_memory", "new_memory", "created_at"}]}."""
    def reset(self) -> Dict[str, Any]:
        """{"message"}: every memory of every scope and all history deleted."""
    @property
    def location(self) -> str:
        """Where the bank is."""

def train_head(
    model: OLMoEModel,
    train: _Path,
    eval: _Path,
    out: _Path,
    mode: Literal["grpo", "sft"] = "grpo",
    **options: Any,
) -> Dict[str, Any]:
    """Trains the memory action head; the report athena train-head --json prints."""
