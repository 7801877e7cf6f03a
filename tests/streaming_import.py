"""What the MDS tests share: MosaicML Streaming's reader without ``import streaming`` (its
``__init__`` imports torchvision, which the CPU stack does not install; readers.md)."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import types
from pathlib import Path

import pytest


def import_streaming(tmp: Path):
    """(Stream, StreamingDataset) from ``streaming.base``; sets ``tempfile.tempdir`` to ``tmp`` (its
    file locks go to gettempdir(): the caller restores the old value). Skips when not installed."""
    tmp.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(tmp)
    try:
        from streaming.base import Stream, StreamingDataset
    except ImportError:
        spec = importlib.util.find_spec("streaming")
        if spec is None:
            pytest.skip("mosaicml-streaming is not installed (pip install --no-deps mosaicml-streaming==0.13.0 "
                        "'xxhash<4' zstd python-snappy brotli catalogue)")
        for key in [k for k in sys.modules if k == "streaming" or k.startswith("streaming.")]:
            del sys.modules[key]
        pkg = types.ModuleType("streaming")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["streaming"] = pkg
        from streaming.base import Stream, StreamingDataset
    return Stream, StreamingDataset
