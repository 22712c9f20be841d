"""LiteLLM extensions for the local stack: one module per hook, each listed in litellm-config.yaml."""
