"""Loopback defaults and the master key, for a proxy started by hand with `litellm --config`.

Listed first in `litellm_settings.callbacks`: LiteLLM loads the callbacks before it reads
`general_settings.master_key` and builds the model list, so the `os.environ/...` references in
litellm-config.yaml resolve to the contract's defaults when the user has set nothing. Values already in the
environment always win. Importing this module changes nothing: the proxy's request for `handler` is the
explicit call that applies the defaults (`ask serve` sets the same values itself, `Stack.environment`).
"""

from __future__ import annotations

import os
from typing import Any

from contract import BACKEND_DEFAULTS, CLOUD_DEFAULTS
from contract.paths import KEY_ENV, master_key


def apply() -> None:
    """Fill what the environment lacks: backend addresses, and the master key (made once, 0600, if absent)."""
    for name, value in {**BACKEND_DEFAULTS, **CLOUD_DEFAULTS}.items():
        if not os.environ.get(name):
            os.environ[name] = value
    if not os.environ.get(KEY_ENV):
        os.environ[KEY_ENV] = master_key() or ""


def __getattr__(name: str) -> Any:
    """`handler`, made when the proxy loads this callback: that is when the defaults are applied."""
    if name != "handler":
        raise AttributeError(name)
    from litellm.integrations.custom_logger import CustomLogger

    apply()
    return CustomLogger()
