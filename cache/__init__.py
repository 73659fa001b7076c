"""The HDF5 summary store: `schema` (every name and version), `writer` (atomic, streamed, checksummed),
`reader` (verified, lazy), `integrity` (the record of what no HDF5 checksum covers), `rows` (global
positions to stored token rows), `chunks` (chunks filtered on every core), `paths` (the cache folder
and the request index), `lock` (one collection of a summary at a time). Imports nothing of ours."""

from .errors import SummaryError, WriteError
from .lock import RunLock
from .paths import (
    RequestIndex,
    cache_dir,
    newest_summary,
    partial_path,
    shard_path,
    summary_path,
)
from .reader import GroupReader, Summary
from .rows import TokenRows
from .writer import SummaryWriter, write_summary

__all__ = [
    "GroupReader", "RequestIndex", "RunLock", "Summary", "SummaryError", "SummaryWriter", "TokenRows", "WriteError",
    "cache_dir", "newest_summary", "partial_path", "shard_path", "summary_path", "write_summary",
]
