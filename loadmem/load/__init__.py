"""The Locust side of ``loadmem run``: preflight, the Locust child process, the phase orchestrator.

Nothing here imports Locust except ``locust_child`` (which runs in its own process).
"""
