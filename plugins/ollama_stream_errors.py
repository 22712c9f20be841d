"""Ollama's `{"error": ...}` line in a stream is a backend failure, and the chain takes it as one.

Ollama (`server/routes.go` streamResponse) answers an error that comes before any content with an HTTP status,
and one that comes after (a runner dying mid-answer) with one more NDJSON line, `{"error": "..."}`. LiteLLM
1.106.2's Ollama stream parser reads that line as a malformed chunk (`KeyError: 'message'`) and raises a 400:
a client error, which no fallback follows and the logs blame on the request. Here the line becomes what it
is, an HTTP 500 in Ollama's own words; LiteLLM's stream wrapper then falls back when nothing has reached the
client yet, and ends the stream with an error event naming the backend's words when something has. Applied
only to the LiteLLM version it was checked on; on any other the original runs. Delete its yaml line to turn
it off.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from litellm.integrations.custom_logger import CustomLogger
from litellm.llms.ollama.chat.transformation import OllamaChatCompletionResponseIterator
from litellm.llms.ollama.common_utils import OllamaError

CHECKED_ON = "1.106.2"


def apply() -> bool:
    """Install the parser; False (and nothing changed) on another LiteLLM version. Installing twice is once."""
    if version("litellm") != CHECKED_ON:
        return False
    original = OllamaChatCompletionResponseIterator.chunk_parser
    if getattr(original, "reads_ollama_errors", False):
        return True

    def chunk_parser(self: Any, chunk: dict) -> Any:
        if isinstance(chunk, dict) and "error" in chunk and "message" not in chunk:
            raise OllamaError(status_code=500, message=str(chunk["error"]), headers={})
        return original(self, chunk)

    chunk_parser.reads_ollama_errors = True  # type: ignore[attr-defined]
    OllamaChatCompletionResponseIterator.chunk_parser = chunk_parser  # type: ignore[method-assign]
    return True


class OllamaStreamErrors(CustomLogger):
    """No hooks: the patch is the whole job. It is a callback so the yaml says it is there."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.applied = apply()


handler = OllamaStreamErrors()
