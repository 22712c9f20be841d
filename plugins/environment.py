"""Loopback defaults and the master key, for a proxy started by hand with `litellm --config`.

Every plugin imports this module. LiteLLM loads `litellm_settings.callbacks` before it reads
`general_settings.master_key` and before it builds the model list, so the `os.environ/...` references in
litellm-config.yaml resolve to these values when the user has set nothing. Values already in the
environment always win.
"""

from __future__ import annotations

import os

from ask_cli.paths import KEY_ENV, master_key

BACKEND_DEFAULTS: dict[str, str] = {
    "OLLAMA_API_BASE": "http://127.0.0.1:11434",
    "LLAMA_SWAP_API_BASE": "http://127.0.0.1:8080/v1",
    "TINY_API_BASE": "http://127.0.0.1:11435/v1",
}
# litellm-config.cloud.yaml reaches Gemini through its OpenAI-compatible endpoint; the other cloud providers'
# addresses default inside LiteLLM when their *_API_BASE is unset.
CLOUD_DEFAULTS: dict[str, str] = {
    "GEMINI_API_BASE": "https://generativelanguage.googleapis.com/v1beta/openai",
}


def apply() -> None:
    for name, value in {**BACKEND_DEFAULTS, **CLOUD_DEFAULTS}.items():
        if not os.environ.get(name):
            os.environ[name] = value
    if not os.environ.get(KEY_ENV):
        os.environ[KEY_ENV] = master_key() or ""


apply()
