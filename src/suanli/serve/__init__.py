"""Serving: an OpenAI-compatible mock engine for tests and benchmarks, and a load generator for any endpoint.

Imports only the lower layers (perf, catalog); the control plane's services and gateway build on top of it.
"""
