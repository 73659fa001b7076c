"""The HDF5 summary store: schema, atomic writer, lazy reader, cache folder. Imports nothing of ours."""

from .paths import cache_dir, summary_path
from .store import Summary, SummaryError, replace_group, write_summary

__all__ = ["Summary", "SummaryError", "cache_dir", "replace_group", "summary_path", "write_summary"]
