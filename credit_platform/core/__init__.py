"""The platform's domain, without Dagster: what the Bento packs beside api/.

Feature and data contracts, schema, database, model input, model store, training,
monitoring, settings. Imports libraries only."""
