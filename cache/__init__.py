"""The HDF5 summary store: schema, atomic streaming writer, verifying lazy reader, cache folder.
Imports nothing of ours."""

from .paths import (
    RequestIndex,
    cache_dir,
    newest_summary,
    partial_path,
    shard_path,
    summary_path,
)
from .store import (
    GroupReader,
    Summary,
    SummaryError,
    SummaryWriter,
    TokenRows,
    write_summary,
)

__all__ = [
    "GroupReader", "RequestIndex", "Summary", "SummaryError", "SummaryWriter", "TokenRows", "cache_dir",
    "newest_summary", "partial_path", "shard_path", "summary_path", "write_summary",
]
