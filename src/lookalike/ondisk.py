"""An IVF index whose inverted lists live in a data file beside index.faiss, memory-mapped by search.

Merging shards in memory needs the whole index in RAM (120 GiB for 100M vectors of SQ8). Here the shards'
inverted lists are merged straight into a Faiss `OnDiskInvertedLists` file, `index.<checksum>.ivfdata`;
index.faiss then holds the trained layers and each list's offset and size in that file, plus its name.

Writes stay atomic with two files: the data file is written under a temporary name, fsynced, and renamed to
a name carrying its checksum; only then is index.faiss (which names it) replaced atomically. A kill at any
point leaves the previous index.faiss naming its own, untouched data file. Since index.faiss's checksum
covers the data file's name, and the name its checksum, the catalog's one recorded checksum vouches for both.
Data files no index.faiss names any more are removed after the next index is recorded.

Faiss opens the data file by the name stored in index.faiss; that name is relative, so the folder can be
moved or copied, and is made absolute in the verified bytes just before they are parsed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import faiss
import numpy as np

from .errors import CorruptIndexError, StorageError
from .index import VectorIndex, faiss_reason, find_ivf
from .storage import file_checksum, file_fingerprint, fsync_folder

DATA_GLOB = "index.*.ivfdata"
DATA_NAME = re.compile(rb"index\.[0-9a-f]{32}\.ivfdata")
ID_BYTES = 8  # each entry of an inverted list: its int64 id, then its code


def data_files(folder: Path) -> list[Path]:
    """The data files of on-disk indexes in `folder` (the current one, and any a killed writer left)."""
    return sorted(folder.glob(DATA_GLOB))


def data_name(index_bytes: np.ndarray) -> str | None:
    """The data file an index.faiss's bytes name; None for an index that holds its lists itself."""
    found = DATA_NAME.search(index_bytes.data)
    return found.group(0).decode() if found else None


def is_on_disk(index: VectorIndex) -> bool:
    """Whether `index` reads its inverted lists from a data file (or from a view over one)."""
    ivf = find_ivf(index.index)
    if ivf is None:
        return False
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return isinstance(lists, (faiss.OnDiskInvertedLists, faiss.HStackInvertedLists))


# --- writing ---------------------------------------------------------------------------------


def write_on_disk(template: faiss.Index, parts: Sequence[faiss.Index], path: Path) -> str:
    """Merge the inverted lists of `parts` into a new data file, then save `template` naming it as `path`.

    `template` is the trained index, empty; every part was built from a copy of it. The parts are only read
    (they may be memory-mapped shard files, or a mapped on-disk index). Returns index.faiss's checksum.
    """
    ivf = find_ivf(template)
    if ivf is None or template.ntotal:
        raise ValueError("an on-disk index is written from an empty, trained IVF index")
    sources = [_ivf_of(part, ivf) for part in parts]
    needed = sum(source.invlists.compute_ntotal() for source in sources) * (ivf.code_size + ID_BYTES)
    _check_free_space(path.parent, needed)
    try:
        name, count = _write_data_file(path.parent, ivf, sources)
        # Relative: read back beside index.faiss, wherever the folder is.
        faiss.downcast_InvertedLists(ivf.invlists).filename = name
        _set_count(template, count)
        return VectorIndex(template, "cosine").save(path)
    finally:
        _set_count(template, 0)
        ivf.replace_invlists(_empty_lists(ivf), True)  # closes the mapping of the data file now


def _write_data_file(folder: Path, ivf: faiss.IndexIVF, sources: list[faiss.IndexIVF]) -> tuple[str, int]:
    """Merge the sources' lists into `ivf`'s new lists in a scratch file, fsynced and renamed to its checksum's name.

    Returns the name and how many vectors the lists hold.
    """
    try:
        descriptor, scratch = tempfile.mkstemp(dir=folder, prefix=".index.ivfdata.", suffix=".tmp")
    except OSError as error:
        raise StorageError(f"cannot write the index's data file in {folder}: {error.strerror or error}") from None
    os.close(descriptor)
    try:
        lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, scratch)
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # the template owns it now
        pointers = faiss.InvertedListsPtrVector()
        for source in sources:
            pointers.push_back(source.invlists)
        with _quiet_stdout():  # Faiss prints each resize of the data file
            count = int(lists.merge_from_multiple(pointers.data(), pointers.size(), False, False))
        with open(scratch, "rb+") as handle:
            os.fsync(handle.fileno())
        name = f"index.{file_checksum(scratch)}.ivfdata"
        os.replace(scratch, folder / name)
    except BaseException as error:
        Path(scratch).unlink(missing_ok=True)
        if isinstance(error, (OSError, RuntimeError)):  # Faiss reports a failed write as RuntimeError
            reason = error.strerror if isinstance(error, OSError) and error.strerror else faiss_reason(error)
            raise StorageError(
                f"cannot write the index's data file in {folder}: {reason}; the previous index is kept"
            ) from None
        raise
    fsync_folder(folder)
    return name, count


def _check_free_space(folder: Path, needed: int) -> None:
    # Faiss grows the data file by truncate and writes it through a mapping: on a full disk that write is a
    # SIGBUS, not an error. Refuse up front instead (the previous index is kept either way).
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise StorageError(
            f"cannot write the index's data file in {folder}: it needs {needed} bytes and {free} are free; "
            "the previous index is kept"
        )


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Send what C++ code prints on the process's stdout to /dev/null meanwhile (Python's own output is kept)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def remove_unused_data(folder: Path, keep: str | None) -> int:
    """Delete the data files other than `keep` (a reader that still maps one keeps reading it); how many."""
    removed = 0
    for path in data_files(folder):
        if path.name != keep:
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed


# --- reading ---------------------------------------------------------------------------------


def read_verified(path: Path, index_bytes: np.ndarray, name: str, trust_fingerprint: bool) -> faiss.Index:
    """The on-disk index from its verified index.faiss bytes, its lists mapped read-only from the data file `name`.

    The data file is checked against the checksum its name carries, unless `trust_fingerprint` (index.faiss is
    provably the file recorded) and the data file has not changed since index.faiss was written: its ctime,
    which user code cannot set back, is not later than index.faiss's.
    """
    data = path.parent / name
    if not data.is_file():
        raise CorruptIndexError(f"{data} is missing")
    quick = trust_fingerprint and file_fingerprint(data)["ctime_ns"] <= file_fingerprint(path)["ctime_ns"]
    if not quick and file_checksum(data) != name.split(".")[1]:
        raise CorruptIndexError(f"{data} does not match the checksum its name records")
    index = faiss.deserialize_index(_naming(index_bytes, name, str(data.resolve())), faiss.IO_FLAG_READ_ONLY)
    # Faiss starts 32 threads per search to page the probed lists in ahead: with the lists in the page cache,
    # and one query per server request, starting them costs more than the search itself (benchmarks.md).
    faiss.downcast_InvertedLists(_ivf_of(index).invlists).prefetch_nthread = 0
    return index


def _naming(index_bytes: np.ndarray, name: str, full: str) -> np.ndarray:
    """The bytes with the data file's stored name (a length-prefixed string) replaced by `full`."""
    stored = struct.pack("<Q", len(name)) + name.encode()
    wanted = struct.pack("<Q", len(full.encode())) + full.encode()
    return np.frombuffer(bytes(index_bytes).replace(stored, wanted, 1), dtype=np.uint8)


def empty_copy(index_bytes: np.ndarray) -> faiss.Index:
    """The trained index an on-disk index.faiss describes, with empty lists in memory (its data file unread)."""
    index = faiss.deserialize_index(index_bytes, faiss.IO_FLAG_SKIP_IVF_DATA)
    ivf = find_ivf(index)
    if ivf is None:
        raise CorruptIndexError("an on-disk index file holds no IVF layer")
    ivf.own_invlists = False  # the placeholder Faiss reads in place of the lists is not safe to free
    ivf.replace_invlists(_empty_lists(ivf), True)
    _set_count(index, 0)
    return index


def with_pending(
    base: VectorIndex, template: faiss.Index, batches: Iterator[tuple[np.ndarray, np.ndarray]]
) -> VectorIndex:
    """A read-only view of the on-disk `base` plus the newer embeddings, held in memory; `template` is empty.

    The newer vectors go into `template`'s lists; a second copy searches both lists side by side (Faiss's
    HStackInvertedLists), so no byte of the data file is copied into memory.
    """
    delta = VectorIndex(template, base.metric)
    for ids, vectors in batches:
        delta.add(ids, vectors)
    if not delta.count:
        return base
    view = faiss.clone_index(template)
    view_ivf, lists = _ivf_of(view, _ivf_of(template)), faiss.InvertedListsPtrVector()
    lists.push_back(_ivf_of(base.index, view_ivf).invlists)
    lists.push_back(_ivf_of(template, view_ivf).invlists)
    stacked = faiss.HStackInvertedLists(lists.size(), lists.data())
    view_ivf.replace_invlists(stacked, True)
    stacked.this.disown()
    _set_count(view, base.count + delta.count)
    searched = VectorIndex(view, base.metric, read_only=True)
    searched.keep_alive = (base, delta)  # the stacked lists point into both
    return searched


# --- helpers -------------------------------------------------------------------------------------


def _ivf_of(part: faiss.Index, like: faiss.IndexIVF | None = None) -> faiss.IndexIVF:
    """The IVF layer of `part`, checked to hold lists of the same shape as `like`'s."""
    ivf = find_ivf(part)
    if ivf is None:
        raise ValueError("an on-disk index is built from IVF indexes only")
    like = like or ivf
    if ivf.nlist != like.nlist or ivf.code_size != like.code_size or ivf.d != like.d:
        raise ValueError("this shard was not built from the index's trained copy")
    return ivf


def _empty_lists(ivf: faiss.IndexIVF) -> faiss.InvertedLists:
    lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    lists.this.disown()  # handed to replace_invlists(..., True): the index frees it
    return lists


def _set_count(index: faiss.Index, count: int) -> None:
    """Set ntotal on every layer down to the IVF one (PreTransform wrappers keep their own count)."""
    layer = faiss.downcast_index(index)
    while True:
        layer.ntotal = count
        if isinstance(layer, faiss.IndexIVF) or not isinstance(layer, faiss.IndexPreTransform):
            return
        layer = faiss.downcast_index(layer.index)
