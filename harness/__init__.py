"""Real parts the tests and the benchmarks share: servers, the stack's environment, emulated backends, timing.

It may import `ask_cli` and `contract`; product code never imports it.
"""
