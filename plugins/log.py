"""The plugins' own log lines, visible in the proxy's output: LiteLLM configures only its own loggers."""

from __future__ import annotations

import logging

ROOT = "local_llm_stack"


def logger(name: str) -> logging.Logger:
    """`local_llm_stack.<name>`, writing `... WARNING local-llm-stack: <message>` to stderr."""
    root = logging.getLogger(ROOT)
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s local-llm-stack: %(message)s"))
        root.addHandler(handler)
        root.propagate = False
    return root.getChild(name)
