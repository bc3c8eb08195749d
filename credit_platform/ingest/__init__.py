"""Data in: the synthetic generator and the Kaggle-format loader for the feature store."""

from credit_platform.ingest.kaggle import clean_kaggle_frame, load_kaggle_csv, read_kaggle_csv
from credit_platform.ingest.synthetic import build_synthetic, generate_synthetic, seed_synthetic
from credit_platform.ingest.writer import (
    IngestError,
    IngestSummary,
    IngestWriteError,
    SourceFrames,
)

__all__ = [
    "IngestError",
    "IngestSummary",
    "IngestWriteError",
    "SourceFrames",
    "build_synthetic",
    "clean_kaggle_frame",
    "generate_synthetic",
    "load_kaggle_csv",
    "read_kaggle_csv",
    "seed_synthetic",
]
