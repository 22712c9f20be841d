"""Per-request work in LiteLLM that profiling found wasted, removed without changing any answer.

`OllamaModelInfo._is_static_ollama_model` lower-cases every key of `litellm.model_cost` (~4,200) into a new set,
twice for every Ollama request: 9 % of the proxy's CPU, ~0.8 ms per request (bench/README.md). Here the
lower-cased keys are kept and rebuilt whenever `model_cost` is replaced or changes size, so a model registered
at run time (`litellm.register_model`) is still seen. Applied only to the LiteLLM version it was measured on;
on any other the original runs. Listed first in `litellm_settings.callbacks`; delete that line to turn it off.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from litellm.integrations.custom_logger import CustomLogger
from litellm.llms.ollama.common_utils import OllamaModelInfo

MEASURED_ON = "1.106.2"

_lowered: tuple[tuple[int, int], frozenset[str]] = ((0, -1), frozenset())


def lowered_cost_keys() -> frozenset[str]:
    """`model_cost`'s keys, lower-cased, computed again only when the dict is replaced or resized."""
    global _lowered
    from litellm import model_cost

    stamp = (id(model_cost), len(model_cost))
    if _lowered[0] != stamp:
        _lowered = (stamp, frozenset(key.lower() for key in model_cost))
    return _lowered[1]


def is_static_ollama_model(model: str) -> bool:
    """Same answer as LiteLLM's own: is this Ollama model in the static cost map (then no /api/show lookup)."""
    stripped = OllamaModelInfo._strip_ollama_model_prefix(model)
    keys = lowered_cost_keys()
    return any(name.lower() in keys for name in (model, stripped, "ollama/" + stripped, "ollama_chat/" + stripped))


def apply() -> bool:
    """Install the faster lookups; False (and nothing changed) on a LiteLLM version they were not checked on."""
    if version("litellm") != MEASURED_ON:
        return False
    OllamaModelInfo._is_static_ollama_model = staticmethod(is_static_ollama_model)  # type: ignore[method-assign]
    return True


class HotPath(CustomLogger):
    """No hooks: importing the module is the whole job. It is a callback so the yaml says it is there."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.applied = apply()


handler = HotPath()
