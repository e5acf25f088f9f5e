"""Durable Raft state: the log and hard state (SQLite), snapshots, the data-dir lock.

Everything here does blocking file I/O and knows nothing of the network or
of what the entries mean. It imports only `railyard.raft` value types.
"""

from railyard.storage.backup import BackupHeader, BackupWriter, extract_state, read_backup
from railyard.storage.errors import (
    CorruptSnapshot,
    CorruptStore,
    DirectoryLocked,
    LogCompacted,
    LogGap,
    StorageError,
    StoreIOError,
    StoreMismatch,
)
from railyard.storage.lock import DataDirLock
from railyard.storage.log import LogStore, MemoryLogStore
from railyard.storage.snapshots import (
    SnapshotReceiver,
    SnapshotStore,
    fsync_directory,
    sha256_file,
    sqlite_problem,
)
from railyard.storage.sqlite_log import SqliteLogStore

__all__ = [
    "BackupHeader",
    "BackupWriter",
    "CorruptSnapshot",
    "CorruptStore",
    "DataDirLock",
    "DirectoryLocked",
    "LogCompacted",
    "LogGap",
    "LogStore",
    "MemoryLogStore",
    "SnapshotReceiver",
    "SnapshotStore",
    "SqliteLogStore",
    "StorageError",
    "StoreIOError",
    "StoreMismatch",
    "extract_state",
    "fsync_directory",
    "read_backup",
    "sha256_file",
    "sqlite_problem",
]
