"""The Parquet lake (`LakeResource`) and its stores: a local folder or S3 (see resource.py, store.py)."""

from crypto_platform.resources.lake.model import (
    LINEAGE_KEY,
    MANIFEST_FILE,
    PARQUET_OPTIONS,
    PART_FILE,
    CommitConflict,
    LakeReadError,
    Lineage,
    SweepReport,
    WriteInfo,
)
from crypto_platform.resources.lake.resource import LakeResource, lake_resource

__all__ = [
    "LINEAGE_KEY",
    "MANIFEST_FILE",
    "PARQUET_OPTIONS",
    "PART_FILE",
    "CommitConflict",
    "LakeReadError",
    "LakeResource",
    "Lineage",
    "SweepReport",
    "WriteInfo",
    "lake_resource",
]
