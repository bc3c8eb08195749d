"""The Dagster code location (`definitions.defs`) and what it gathers.

Assets, checks, resources, sensors, jobs and schedules. Imports core and ingest.

Importing it silences four Dagster lifecycle warnings, each by its exact message, because
they would otherwise print on every load of the code location and in every run:
partitioned asset checks (one result per daily partition) are a preview feature of Dagster
1.13, and the catalog's local code references (`with_source_code_references`) are beta. The
platform uses both on purpose; every other Dagster warning stays visible.
"""

import warnings

from dagster import BetaWarning, PreviewWarning

warnings.filterwarnings(
    "ignore",
    message="Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    category=PreviewWarning,
)
warnings.filterwarnings(
    "ignore",
    message="(Function `with_source_code_references`|Class `LocalFileCodeReference`|"
    "Class `CodeReferencesMetadataValue`) is currently in beta",
    category=BetaWarning,
)
