"""A credit-score MLOps platform: Dagster assets, MLflow tracking, a BentoML service.

The layers import downward only: core, ingest, defs, cli (and api/ beside them, on core).
"""
