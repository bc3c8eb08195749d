"""The Dagster code location: `definitions.defs` and the assets, checks, resources, sensors,
jobs and schedules it gathers. Imports core and ingest."""
