"""plugins/hot_path.py gives LiteLLM's own answers, only faster, and steps aside on another LiteLLM version."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

litellm = pytest.importorskip("litellm")

from litellm.llms.ollama.common_utils import OllamaModelInfo  # noqa: E402

ORIGINAL = OllamaModelInfo.__dict__["_is_static_ollama_model"]  # before the plugin's import patches it

from plugins import hot_path  # noqa: E402


@pytest.fixture
def original() -> Iterator[None]:
    """Each test starts from LiteLLM's own lookup, and leaves it in place."""
    OllamaModelInfo._is_static_ollama_model = ORIGINAL
    yield
    OllamaModelInfo._is_static_ollama_model = ORIGINAL


def names() -> list[str]:
    static = [key for key in litellm.model_cost if key.startswith(("ollama/", "ollama_chat/"))][:20]
    ours = ["qwen3.5:9b", "llama3.2:3b", "gemma3:1b", "qwen3-coder:30b"]
    prefixed = [f"{prefix}/{name}" for name in ours for prefix in ("ollama", "ollama_chat")]
    upper = [name.upper() for name in static[:5]] + [name.split("/", 1)[1] for name in static[:5]]
    return static + ours + prefixed + upper + ["gpt-4o", "", "ollama/"]


def test_same_answers_as_litellm(original: None) -> None:
    expected = {name: ORIGINAL.__func__(name) for name in names()}
    assert any(expected.values()) and not all(expected.values())  # the sample has both kinds
    assert hot_path.apply()
    assert {name: OllamaModelInfo._is_static_ollama_model(name) for name in names()} == expected


def test_a_model_registered_later_is_seen(original: None) -> None:
    assert hot_path.apply()
    name = "ollama/hot-path-test-model:7b"
    assert not OllamaModelInfo._is_static_ollama_model(name)
    litellm.register_model(
        {
            name: {
                "input_cost_per_token": 0.0,
                "output_cost_per_token": 0.0,
                "litellm_provider": "ollama",
                "mode": "chat",
            }
        }
    )
    try:
        assert OllamaModelInfo._is_static_ollama_model(name)
        assert OllamaModelInfo._is_static_ollama_model(name.upper()) == ORIGINAL.__func__(name.upper())
    finally:
        litellm.model_cost.pop(name, None)


def test_another_litellm_version_keeps_the_original(original: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hot_path, "version", lambda _: "1.999.0")
    assert not hot_path.apply()
    assert OllamaModelInfo.__dict__["_is_static_ollama_model"] is ORIGINAL
