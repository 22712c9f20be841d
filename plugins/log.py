"""The plugins' own log lines, visible in the proxy's output: LiteLLM configures only its own loggers.

Every line is one line: text a client sent (a model name, metadata) can reach a log message, ours or
LiteLLM's, and a CR or LF in it would forge the lines after it. `OneLine` escapes control characters in every
record of our logger and of LiteLLM's three.
"""

from __future__ import annotations

import logging
import re

ROOT = "local_llm_stack"
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Proxy", "LiteLLM Router")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")  # all but TAB


def one_line(text: str) -> str:
    """`text` with each control character as an escape (`\\n`, `\\r`, `\\x1b`): one line, nothing hidden."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class OneLine(logging.Filter):
    """Rewrites a record whose message holds a control character into one escaped line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _CONTROL.search(message):
            record.msg, record.args = one_line(message), None
        return True


def logger(name: str) -> logging.Logger:
    """`local_llm_stack.<name>`, writing `... WARNING local-llm-stack: <message>` to stderr."""
    root = logging.getLogger(ROOT)
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s local-llm-stack: %(message)s"))
        handler.addFilter(OneLine())  # our children log through this handler
        root.addHandler(handler)
        root.propagate = False
        for litellm_name in LITELLM_LOGGERS:
            logging.getLogger(litellm_name).addFilter(OneLine())
    return root.getChild(name)
