"""Reading and decoding images from folders that anyone fills: pixels as H×W×3 uint8 arrays.

Every image that enters the lake or a model goes through :func:`load` (one file) or
:func:`load_isolated` (a batch), which hold against hostile files:

* only regular files are opened (a FIFO, a device such as a link to ``/dev/zero``, a
  socket or a folder is an error; the file is opened non-blocking and checked after
  opening, so it cannot be swapped for a FIFO in between);
* at most ``max_bytes`` are read, and an image whose header declares more than
  ``max_pixels`` pixels (a decompression bomb) is refused before decoding;
* an image longer than ``max_side`` on its longer side is reduced *while* decoding: JPEG
  with ``Image.draft`` (the DCT scaled by 1/2, 1/4 or 1/8), other formats with libvips'
  shrink-on-load thumbnail, which streams the rows, so a 12000×12000 PNG costs about
  what the 2048-pixel result needs, not 432 MB of RGB;
* a URI that the lake's filesystems cannot open (``http://``, an unknown scheme) is an error.

Each refusal is an :class:`ImageError` naming the file and the reason; callers turn it
into an ``ingest_errors`` row. :func:`load_isolated` decodes a batch in a worker process:
a decoder that hangs past ``timeout_s`` or crashes the process (a segfault in a native
decoder) costs that file one error, and a fresh worker decodes the rest of the batch.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import signal
import stat
import subprocess
import sys
import warnings
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

MAX_BYTES = 256 * 2**20  # a larger file is refused without being read
# Declared width × height above this is refused as a decompression bomb; Pillow itself refuses
# above 2 × Image.MAX_IMAGE_PIXELS (179 million) whatever this says.
MAX_PIXELS = 150_000_000
MAX_SIDE = 2048  # longer side of the decoded array; larger images are reduced while decoding
TIMEOUT_S = 60.0  # one file's read + decode in the worker process; past it the worker is killed


class ImageError(ValueError):
    """An image that cannot be read or decoded; the message names its URI and why."""


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS
    max_side: int = MAX_SIDE
    timeout_s: float = TIMEOUT_S


@dataclass(frozen=True)
class Decoded:
    """A decoded image: ``pixels`` (at most ``max_side`` long) and the file's own size and hash."""

    pixels: np.ndarray | None  # None when only the description was asked for (load_file(pixels=False))
    width: int  # as declared by the file, before any reduction
    height: int
    size_bytes: int
    sha256: str


def read_bytes(uri: str, *, max_bytes: int = MAX_BYTES) -> bytes:
    """The file's bytes: local paths, ``file://`` and any URI pyarrow's filesystems know.

    Refused (:class:`ImageError`): anything but a regular file, more than ``max_bytes``,
    a scheme with no filesystem.
    """
    if "://" not in uri or uri.startswith("file://"):
        return _read_local(uri.removeprefix("file://"), uri, max_bytes)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError) as err:
        scheme = uri.split("://", 1)[0]
        raise ImageError(f"{uri}: cannot open a {scheme}:// URI: the lake reads local paths and filesystem URIs "
                         f"(file, s3, gs, abfs, hdfs) ({_plain(err)})") from None
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise ImageError(f"{uri}: file not found")
        if info.type != pafs.FileType.File:
            raise ImageError(f"{uri}: not a regular file ({info.type.name})")
        if info.size is not None and info.size > max_bytes:
            raise ImageError(f"{uri}: {info.size} bytes, more than the {max_bytes} allowed (images.max_bytes)")
        with fs.open_input_stream(path) as stream:
            data = stream.read(max_bytes + 1)
    except OSError as err:
        raise ImageError(f"{uri}: cannot read: {_plain(err)}") from None
    if len(data) > max_bytes:
        raise ImageError(f"{uri}: more than the {max_bytes} bytes allowed (images.max_bytes)")
    return data


def _read_local(path: str, uri: str, max_bytes: int) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO without a writer returns at once instead of hanging
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageError(f"{uri}: file not found") from None
    except OSError as err:
        raise ImageError(f"{uri}: cannot open: {os.strerror(err.errno) if err.errno else err}") from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{uri}: not a regular file ({_kind(info.st_mode)}): only image files are read")
        if info.st_size > max_bytes:
            raise ImageError(f"{uri}: {info.st_size} bytes, more than the {max_bytes} allowed (images.max_bytes)")
        chunks, total = [], 0
        while total <= max_bytes:
            try:
                chunk = f.read(min(1 << 20, max_bytes + 1 - total))
            except OSError as err:
                if err.errno == errno.EAGAIN:
                    continue
                raise ImageError(f"{uri}: cannot read: {os.strerror(err.errno)}") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    if total > max_bytes:
        raise ImageError(f"{uri}: grew past the {max_bytes} bytes allowed (images.max_bytes) while read")
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a plain file"


def decode(data: bytes, *, uri: str = "<bytes>", limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Decode image bytes to an H×W×3 uint8 RGB array, at most ``limits.max_side`` long (see the module doc)."""
    return _decode(data, uri, limits)[0]


def _decode(data: bytes, uri: str, limits: DecodeLimits) -> tuple[np.ndarray, int, int]:
    """(pixels, declared width, declared height); every decoder failure is an :class:`ImageError`."""
    if not data:
        raise ImageError(f"{uri}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                width, height = img.size
                if width * height > limits.max_pixels:
                    raise ImageError(f"{uri}: declares {width}×{height} = {width * height} pixels, more than the "
                                     f"{limits.max_pixels} allowed (images.max_pixels): a decompression bomb?")
                if max(width, height) > limits.max_side and img.format != "JPEG":
                    return _decode_reduced(data, limits.max_side), width, height
                if max(width, height) > limits.max_side:
                    scale = limits.max_side / max(width, height)
                    img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
                img.load()
                if max(img.size) > limits.max_side:
                    img.thumbnail((limits.max_side, limits.max_side), Image.Resampling.BILINEAR)
                rgb = img.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"{uri}: refused as a decompression bomb ({err})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{uri}: not a decodable image (no format Pillow reads; first bytes {data[:8]!r})") from None
    except MemoryError:
        raise ImageError(f"{uri}: decoding needs more memory than this process has") from None
    except Exception as err:  # noqa: BLE001 - a plugin fails on hostile bytes in its own way
        raise ImageError(f"{uri}: not a decodable image ({type(err).__name__}: {_plain(err)})") from None
    return np.asarray(rgb, dtype=np.uint8), width, height


def _decode_reduced(data: bytes, max_side: int) -> np.ndarray:
    """libvips' thumbnail: shrink-on-load, streaming the rows; truncated data is an error, not grey rows."""
    import pyvips

    try:
        img = pyvips.Image.thumbnail_buffer(data, max_side, height=max_side, size="down",
                                            option_string="fail_on=error")
        if img.hasalpha():  # dropped, as Pillow's convert("RGB") does for the images decoded there
            img = img.extract_band(0, n=img.bands - 1)
        img = img.colourspace("srgb")  # grey, CMYK, 16-bit → 8-bit sRGB, three bands
        if img.format != "uchar":
            img = img.cast("uchar")
        return np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=[img.height, img.width, 3])
    except pyvips.Error as err:
        detail = " ".join(str(err.detail or "").split())  # the loader's own words ("libpng read error")
        raise ValueError(f"libvips: {detail or err.message}") from None


def load(uri: str, *, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """The image at ``uri`` as H×W×3 uint8 (guarded read and decode, in this process)."""
    return decode(read_bytes(uri, max_bytes=limits.max_bytes), uri=uri, limits=limits)


def load_file(uri: str, *, limits: DecodeLimits = DecodeLimits(), pixels: bool = True) -> Decoded:
    """Read and decode one file; ``pixels=False`` checks that it decodes but returns only its description."""
    data = read_bytes(uri, max_bytes=limits.max_bytes)
    array, width, height = _decode(data, uri, limits)
    return Decoded(array if pixels else None, width, height, len(data), hashlib.sha256(data).hexdigest())


def load_isolated(uris: Sequence[str], *, limits: DecodeLimits = DecodeLimits(),
                  pixels: bool = True, workers: int = 1) -> list[Decoded | ImageError]:
    """:func:`load_file` of each URI in a worker process, in order: a :class:`Decoded` or the file's error.

    A file whose read and decode take longer than ``limits.timeout_s``, or that kills the
    worker (a native decoder's crash), becomes an :class:`ImageError`; the rest of the batch
    is decoded by a fresh worker.
    """
    def failure(uri: str, why: str) -> ImageError:
        return ImageError(f"{uri}: {why}")

    return run_isolated(partial(load_file, limits=limits, pixels=pixels), list(uris),
                        timeout_s=limits.timeout_s, expected=ImageError, failure=failure, workers=workers)


# -- the worker process ------------------------------------------------------------------------------------
class _Worker:
    """A child Python that applies a pickled function to items and sends each result back as it is done."""

    def __init__(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        # the child imports this package from where this process found it (a worktree, a Ray working dir)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"from brain.images import _serve; _serve({to_child_r}, {from_child_w})"],
            pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL, close_fds=True)
        os.close(to_child_r)
        os.close(from_child_w)
        self.send, self.receive = Connection(to_child_w, readable=False), Connection(from_child_r, writable=False)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> str:
        """Stop the worker; how it ended (for the error message)."""
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait()
        self.send.close()
        self.receive.close()
        if code >= 0:
            return f"exit code {code}"
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"


def _serve(read_fd: int, write_fd: int) -> None:
    receive, send = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    # this process only decodes: DecodeLimits.max_pixels is the ceiling here, with the declared size in its message
    Image.MAX_IMAGE_PIXELS = None
    while True:
        try:
            fn, items, expected = pickle.loads(receive.recv_bytes())
        except EOFError:
            return
        send.send((-1, True, None))  # unpickled (its modules imported): the per-item clock starts now
        for i, item in enumerate(items):
            try:
                send.send((i, True, fn(item)))
            except expected as err:
                send.send((i, False, str(err)))


_worker: _Worker | None = None


def run_isolated(fn: Callable[[Any], Any], items: list, *, timeout_s: float, expected: type[Exception],
                 failure: Callable[[Any, str], Exception], workers: int = 1) -> list:
    """``fn(item)`` for each item in a worker process, in order; ``expected`` errors come back as values.

    An item that takes longer than ``timeout_s`` or kills the worker becomes ``failure(item, why)``,
    and a fresh worker carries on with the items after it. ``fn`` must be picklable (a module-level
    function or a ``functools.partial`` of one). The worker is kept for the next call in this process.
    ``workers`` > 1: the items are cut into that many contiguous parts, each run by a worker process of
    its own (a thread per part waits on it), and those workers end with the call.
    """
    global _worker
    if workers <= 1 or len(items) < 2:
        slot = [_worker]
        try:
            return _run_in(slot, fn, items, timeout_s=timeout_s, expected=expected, failure=failure)
        finally:
            _worker = slot[0]
    from concurrent.futures import ThreadPoolExecutor

    bounds = [len(items) * i // workers for i in range(workers + 1)]
    parts = [items[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    slots: list[list[_Worker | None]] = [[None] for _ in parts]
    try:
        with ThreadPoolExecutor(len(parts)) as pool:
            done = pool.map(lambda slot, part: _run_in(slot, fn, part, timeout_s=timeout_s, expected=expected,
                                                       failure=failure), slots, parts)
            return [result for part in done for result in part]
    finally:
        for slot in slots:
            if slot[0] is not None:
                slot[0].kill()


def _run_in(slot: list, fn: Callable[[Any], Any], items: list, *, timeout_s: float, expected: type[Exception],
            failure: Callable[[Any, str], Exception]) -> list:
    """:func:`run_isolated` on the worker in ``slot`` (a one-item list: replaced when it dies)."""
    results: list = [None] * len(items)
    start = 0
    while start < len(items):
        if slot[0] is None or not slot[0].alive():
            slot[0] = _Worker()
        worker = slot[0]
        worker.send.send_bytes(pickle.dumps((fn, items[start:], expected)))
        if not _started(worker):
            raise RuntimeError(f"the decode worker process did not start within {STARTUP_TIMEOUT_S:g} s "
                               f"({worker.kill()})")
        done = start
        while done < len(items):
            if not worker.receive.poll(timeout_s):
                worker.kill()
                results[done] = failure(items[done], f"reading and decoding took longer than {timeout_s:g} s "
                                                     "(images.timeout_s): the decoder was stopped")
                done += 1
                break
            try:
                i, ok, value = worker.receive.recv()
            except (EOFError, OSError):
                how = worker.kill()
                results[done] = failure(items[done], f"the decoder crashed on this file ({how})")
                done += 1
                break
            results[start + i] = value if ok else expected(value)
            done = start + i + 1
        start = done
    return results


STARTUP_TIMEOUT_S = 120.0  # a fresh worker's interpreter start and imports, on a loaded machine


def _started(worker: _Worker) -> bool:
    try:
        return worker.receive.poll(STARTUP_TIMEOUT_S) and worker.receive.recv()[0] == -1
    except (EOFError, OSError):
        return False


def _plain(err: BaseException) -> str:
    """An error's message on one line."""
    return " ".join(str(err).split())
