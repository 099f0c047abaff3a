"""ltrr core: events, simulator, data gates, features, model families and registry.

Nothing here happens at import: entry points (CLI, DAG, tests) build a `Settings` and pass values in.
"""
