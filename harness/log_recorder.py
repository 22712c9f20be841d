"""A test-only LiteLLM callback: what every success event's log payload says, one JSON line each (LOG_RECORD_PATH).

It is what a database logger or the UI would receive, read after our plugins' `async_logging_hook` ran."""

from __future__ import annotations

import json
import os
from typing import Any

from litellm.integrations.custom_logger import CustomLogger


class LogRecorder(CustomLogger):
    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        payload = kwargs.get("standard_logging_object") or {}
        line = {
            "call_id": kwargs.get("litellm_call_id"),
            "model_group": payload.get("model_group"),
            "request_tags": payload.get("request_tags"),
        }
        with open(os.environ["LOG_RECORD_PATH"], "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


handler = LogRecorder()
