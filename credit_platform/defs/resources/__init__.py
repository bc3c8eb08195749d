"""Dagster resources: the feature store, MLflow tracking and the BentoML model store."""
