"""Decoding files for ingest, in threads or in worker processes, in order and with bounded read-ahead.

Each file becomes a `DecodedFile` in the worker that decodes it: model-ready pixels, content hash and size, plus
the pixel signature and header facts the catalog stores. The consumer, which runs the model and writes the
catalog, is left with no per-image Python work beyond its rows.

- "threads": Pillow releases the GIL while it decodes and resizes, but parsing headers, EXIF, the signature and
  the glue around them hold it (1.5-2.5 ms per 12 MP JPEG, see docs/benchmarks.md): that serial part caps a
  threaded ingest at a few hundred images per second, however many cores there are.
- "processes": each worker is a fresh interpreter that imports this module and nothing else of the caller's.
  multiprocessing's spawn and forkserver re-import the caller's main module in every worker (a script without an
  `if __name__ == "__main__"` guard would run again there), and fork copies a parent that runs ONNX Runtime or
  server threads; neither happens here. Paths go out and results (pickled: 150 KB of pixels for a 224 px model)
  come back on pipes. A worker that dies (a decoder crash on a hostile file) fails only the file it was
  decoding; a new worker takes over the rest of its queue.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

from .catalog_duplicates import StoredSignature
from .errors import ImageDecodeError, InvalidArgumentError, LookalikeError
from .files import FileEntry
from .images import DecodedImage, decode_file
from .signatures import SIGNATURE_SIDE, compute_signature, count_metadata_fields, estimate_jpeg_quality

DECODE_MODES = ("threads", "processes")
DEFAULT_DECODE = "threads"  # measured faster on 2 cores (docs/benchmarks.md, "Ingest"); see the module docstring
INLINE_LIMIT = 8  # below this many files, a pool costs more than it saves
READ_AHEAD = 8  # decoded images waiting per worker: bounds memory whatever the folder's size
# A JPEG's quantization tables sit before its first scan, after the EXIF and ICC segments (64 KiB each at most),
# and a PNG's text chunks usually before its image data: this many header bytes hold them in practice, and
# reading them again right after decoding costs a page-cache read.
HEADER_BYTES = 256 * 1024
_LENGTH = struct.Struct("<Q")
_READY = b"lookalike-decoder-ready"
_STOP_SECONDS = 5.0


@dataclass(frozen=True)
class DecodedFile:
    """One decoded file and what the catalog stores about its pixels and header. Picklable."""

    image: DecodedImage
    signature: StoredSignature | None


Outcome = DecodedFile | ImageDecodeError


class DecoderStartError(LookalikeError):
    """A decoding process could not be started (the interpreter or lookalike cannot be loaded there)."""


# --- the work for one file ---------------------------------------------------------------------------------


def decode_entry(path: str, input_size: int, max_megapixels: float | None = None) -> DecodedImage | ImageDecodeError:
    """Decode one file for the model; a file that cannot be decoded gives its error (returned, not raised)."""
    try:
        return decode_file(path, input_size, max_megapixels=max_megapixels)
    except ImageDecodeError as error:
        return error
    except Exception as error:  # noqa: BLE001 - one bad file must never stop the run
        return ImageDecodeError(path, f"unexpected decoder failure: {type(error).__name__}: {error}")


def signature_of(path: str, decoded: DecodedImage) -> StoredSignature | None:
    """The pixel signature of a decoded image (from the model's pixels: no second decode) and its JPEG quality.

    None when the model's input is not a multiple of the signature's side (no such embedder ships today).
    """
    height, width = decoded.pixels.shape[:2]
    if height % SIGNATURE_SIDE or width % SIGNATURE_SIDE:
        return None
    quality, fields = header_facts(path)
    return StoredSignature(compute_signature(decoded.pixels), quality, fields)


def header_facts(path: str) -> tuple[int | None, int]:
    """The JPEG quality (None if not a JPEG) and metadata field count of the file at `path`, from its header."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEADER_BYTES)
    except OSError:
        return None, 0
    return estimate_jpeg_quality(head), count_metadata_fields(head)


FileDecoder = Callable[[str, int, "float | None"], "DecodedImage | ImageDecodeError"]


def prepare_file(
    path: str, input_size: int, max_megapixels: float | None, decoder: FileDecoder | None = None
) -> Outcome:
    """Everything ingest needs from one file, computed where it is decoded (by `decoder`, else `decode_entry`)."""
    decoded = (decoder or decode_entry)(path, input_size, max_megapixels)
    if isinstance(decoded, ImageDecodeError):
        return decoded
    try:
        return DecodedFile(decoded, signature_of(path, decoded))
    except Exception as error:  # noqa: BLE001 - one bad file must never stop the run
        return ImageDecodeError(path, f"unexpected failure reading the header: {type(error).__name__}: {error}")


# --- in order, with read-ahead -------------------------------------------------------------------------------


def decode_files(
    todo: Iterator[FileEntry],
    total: int,
    input_size: int,
    max_megapixels: float | None,
    workers: int,
    mode: str = DEFAULT_DECODE,
    decoder: FileDecoder | None = None,
) -> Iterator[tuple[FileEntry, Outcome]]:
    """Prepare files in order, `workers` at a time ("threads" or "processes"), READ_AHEAD per worker ahead.

    Even one worker decodes beside the caller, so that decoding overlaps the model's run on the previous batch.
    `decoder` replaces `decode_entry` in threads (the embedder's GPU JPEG decoder); processes decode on the CPU.
    """
    check_mode(mode)
    if total < INLINE_LIMIT:
        for entry in todo:
            yield entry, prepare_file(entry.path, input_size, max_megapixels, decoder)
        return
    if mode == "threads":
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="lookalike-decode") as threads:
            yield from _in_order(
                todo,
                lambda path: threads.submit(prepare_file, path, input_size, max_megapixels, decoder),
                max(1, workers),
            )
        return
    with ProcessPool(workers, input_size, max_megapixels) as processes:
        yield from _in_order(todo, processes.submit, max(1, workers))


def check_mode(mode: str) -> None:
    """Refuse a decode mode other than DECODE_MODES."""
    if mode not in DECODE_MODES:
        raise InvalidArgumentError(f"decode_in must be one of {', '.join(DECODE_MODES)}, not {mode!r}", "decode_in")


def _in_order(
    todo: Iterator[FileEntry], submit: Callable[[str], Future], workers: int
) -> Iterator[tuple[FileEntry, Outcome]]:
    window: deque[tuple[FileEntry, Future]] = deque()
    try:
        for entry in todo:
            window.append((entry, submit(entry.path)))
            if len(window) >= workers * READ_AHEAD:
                done, future = window.popleft()
                yield done, future.result()
        while window:
            done, future = window.popleft()
            yield done, future.result()
    finally:
        for _, future in window:
            future.cancel()


# --- worker processes ------------------------------------------------------------------------------------------


class _Worker:
    """One decoding process, the paths sent to it not yet answered (in order), and the thread reading answers."""

    def __init__(self, command: list[str], errors: IO[bytes]) -> None:
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        self.pending: deque[tuple[str, Future]] = deque()
        self.reader: threading.Thread | None = None

    def wait_ready(self, errors: IO[bytes]) -> None:
        assert self.process.stdout is not None
        if _read_frame(self.process.stdout) != _READY:
            code = self.process.wait()
            errors.seek(0)
            tail = errors.read()[-2000:].decode(errors="replace").strip()
            raise DecoderStartError(f"a decoding process exited at start (code {code}): {tail or 'no message'}")

    def close_pipes(self) -> None:
        """Close both pipes (the process has exited or is being stopped)."""
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a pipe to a dead process may fail to flush
                    stream.close()

    def send(self, path: str) -> None:
        assert self.process.stdin is not None
        # If it died, its reader sees the end of its output and hands this path to a new worker.
        with contextlib.suppress(OSError):
            _write_frame(self.process.stdin, pickle.dumps(path))


class ProcessPool:
    """Worker processes that prepare files (`prepare_file`); `submit` returns a Future of the outcome."""

    def __init__(self, workers: int, input_size: int, max_megapixels: float | None) -> None:
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        # -c, not -m: sys.path[0] becomes lookalike's own folder instead of the current directory, so nothing
        # of the caller's (its script, a module named like one of ours in its folder) is imported there.
        code = f"import sys; sys.path[0] = {package_parent!r}; import lookalike.decode_pool as m; m.serve()"
        self._command = [sys.executable, "-c", code, str(input_size), repr(max_megapixels)]
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - the workers' stderr, closed by close()
        self._lock = threading.Lock()
        self._closing = False
        self._workers: list[_Worker] = []
        try:
            for _ in range(max(1, workers)):
                self._workers.append(_Worker(self._command, self._errors))
            for worker in self._workers:
                worker.wait_ready(self._errors)
        except BaseException:
            self.close()
            raise
        for worker in self._workers:
            self._start_reader(worker)

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, path: str) -> Future:
        """Queue `path` on the least busy worker."""
        future: Future = Future()
        with self._lock:
            worker = min(self._workers, key=lambda w: len(w.pending))
            worker.pending.append((path, future))
            worker.send(path)
        return future

    def _start_reader(self, worker: _Worker) -> None:
        worker.reader = threading.Thread(target=self._read, args=(worker,), name="lookalike-decode-reader", daemon=True)
        worker.reader.start()

    def _read(self, worker: _Worker) -> None:
        """Hand each answer to its Future; at the end of the output, replace a worker that died."""
        assert worker.process.stdout is not None
        while (frame := _read_frame(worker.process.stdout)) is not None:
            outcome = pickle.loads(frame)
            with self._lock:
                _, future = worker.pending.popleft()
            future.set_result(outcome)
        code = worker.process.wait()
        with self._lock:
            if self._closing:
                return
            self._replace(worker, code)

    def _replace(self, dead: _Worker, code: int) -> None:
        """The first path sent to `dead` is the one it died on; the rest go to a new worker (lock held)."""
        dead.close_pipes()
        if dead.pending:
            path, future = dead.pending.popleft()
            future.set_result(ImageDecodeError(path, f"the decoder crashed on this file (exit code {code})"))
        worker = _Worker(self._command, self._errors)
        try:
            worker.wait_ready(self._errors)
        except DecoderStartError as error:
            for _, future in dead.pending:
                future.set_exception(error)
            return
        self._workers[self._workers.index(dead)] = worker
        for path, future in dead.pending:
            worker.pending.append((path, future))
            worker.send(path)
        self._start_reader(worker)

    def close(self) -> None:
        """Stop every worker: at once if work is still queued (an interruption), else once it has finished."""
        with self._lock:
            self._closing = True
            busy = any(worker.pending for worker in self._workers)
        for worker in self._workers:
            if busy:
                worker.process.kill()
            elif worker.process.stdin is not None:
                worker.process.stdin.close()  # the worker's loop ends at the end of its input
        for worker in self._workers:
            try:
                worker.process.wait(_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            if worker.reader is not None:
                worker.reader.join()
            for _, future in worker.pending:
                future.cancel()
            worker.close_pipes()
        self._errors.close()


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)) + payload)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """The next message, or None at the end of the stream (the other side exited)."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    payload = stream.read(_LENGTH.unpack(header)[0])
    return payload if len(payload) == _LENGTH.unpack(header)[0] else None


def serve() -> None:
    """A worker process's loop: paths in on stdin, pickled outcomes out on stdout, until stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    input_size, max_megapixels = int(sys.argv[1]), (None if sys.argv[2] == "None" else float(sys.argv[2]))
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the results
    requests = sys.stdin.buffer
    _write_frame(results, _READY)
    while (frame := _read_frame(requests)) is not None:
        outcome = prepare_file(pickle.loads(frame), input_size, max_megapixels)
        _write_frame(results, pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
