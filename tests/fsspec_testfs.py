"""A file system under a test protocol, ``dctest://``, that keeps its files in a local folder
(``root``, a constructor option that dcurate passes from ``storage_options: {dctest: {root: ...}}``).

It stands in for any fsspec-only store (hf://, az://, ...) in tests: dcurate knows nothing about
it beyond fsspec's registry, which finds it through the ``fsspec.specs`` entry point that
tests/test_storage_fsspec.py declares (so fresh worker processes find it too)."""

from __future__ import annotations

from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem


class FolderBackedFS(DirFileSystem):
    protocol = "dctest"
    cachable = False  # each test has its own root

    def __init__(self, root: str, **kwargs):
        super().__init__(path=root, fs=LocalFileSystem(), **kwargs)
