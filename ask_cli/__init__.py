"""`ask`: the command line of the local LLM stack."""

__version__ = "0.1.0"
