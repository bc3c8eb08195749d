"""The domain without Dagster: feature and data contracts, schema, database, model input,
model store, training, settings. Imports libraries only."""
