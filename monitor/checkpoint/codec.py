"""The snapshot file format: a framed, versioned, checksummed container.

::

    magic    8 bytes   b"MONSNAP\\n"
    version  4 bytes   little-endian uint32 (FORMAT_VERSION)
    hlen     8 bytes   little-endian uint64, length of the header
    header   hlen      JSON: scalars, names, offsets, the driver's meta, where each array lies
    arrays             raw little-endian array bytes, back to back
    digest   32 bytes  blake2b-256 of everything above

Any truncation, bit flip or foreign file fails the digest or the framing and
raises :class:`~monitor.errors.StateError`; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from monitor.checkpoint.state import BookState
from monitor.errors import StateError

MAGIC = b"MONSNAP\n"
FORMAT_VERSION = 2  # 2: the header carries the driver's JSON ``meta``
_FRAME = struct.Struct("<8sIQ")
_DIGEST = 32

_ARRAYS = (
    "pos_acct", "pos_sym", "pos_qty", "pos_entry", "pos_mode", "pos_iso", "pos_sub", "pos_ts",
    "bal_acct", "bal_asset", "bal_amount", "bal_ts", "sym_price", "sym_ts", "closed_key",
    "closed_ts",
)  # fmt: skip
_DTYPES = {"f8": np.dtype("<f8"), "i8": np.dtype("<i8")}


def _digest(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST).digest()


def encode_snapshot(state: BookState) -> bytes:
    """The bytes of a snapshot file for ``state``."""
    arrays: dict[str, np.ndarray[Any, Any]] = {k: getattr(state, k) for k in _ARRAYS}
    for k, v in state.account_extras.items():
        arrays[f"extra:{k}"] = v
    specs: list[list[Any]] = []
    blobs: list[bytes] = []
    pos = 0
    for name, arr in arrays.items():
        code = "f8" if arr.dtype.kind == "f" else "i8"
        data = np.ascontiguousarray(arr, dtype=_DTYPES[code]).tobytes()
        specs.append([name, code, int(arr.shape[0]), pos, len(data)])
        blobs.append(data)
        pos += len(data)
    header = msgspec.json.encode(
        {
            "symbols": state.symbols,
            "assets": state.assets,
            "account_ids": state.account_ids,
            "sub_labels": state.sub_labels,
            "last_event_ts": state.last_event_ts,
            "max_correction": state.max_correction,
            "created_ms": state.created_ms,
            "offsets": [[t, p, o] for (t, p), o in sorted(state.offsets.items())],
            "meta": state.meta,
            "arrays": specs,
        }
    )
    body = b"".join([_FRAME.pack(MAGIC, FORMAT_VERSION, len(header)), header, *blobs])
    return body + _digest(body)


class _Header(msgspec.Struct):
    symbols: list[str]
    assets: list[str]
    account_ids: list[str]
    sub_labels: list[str]
    last_event_ts: int
    max_correction: float
    created_ms: int
    offsets: list[tuple[str, int, int]]
    arrays: list[tuple[str, str, int, int, int]]
    meta: dict[str, Any] = {}


def decode_snapshot(data: bytes, name: str = "snapshot") -> BookState:
    """Parse and verify a snapshot; :class:`StateError` naming ``name`` when it is bad."""
    if len(data) < _FRAME.size + _DIGEST:
        raise StateError(f"{name}: truncated ({len(data)} bytes)")
    view = memoryview(data)
    body, digest = view[:-_DIGEST], bytes(view[-_DIGEST:])
    magic, version, hlen = _FRAME.unpack_from(body)
    if magic != MAGIC:
        raise StateError(f"{name}: not a monitor snapshot")
    if _digest(body) != digest:
        raise StateError(f"{name}: checksum mismatch (partial or corrupt file)")
    if version != FORMAT_VERSION:
        raise StateError(f"{name}: format version {version}, this build reads {FORMAT_VERSION}")
    start = _FRAME.size + hlen
    try:
        h = msgspec.json.decode(body[_FRAME.size : start], type=_Header)
    except msgspec.DecodeError as exc:
        raise StateError(f"{name}: bad header: {exc}") from exc
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for arr_name, code, count, off, nbytes in h.arrays:
        dt = _DTYPES.get(code)
        if dt is None or nbytes != count * dt.itemsize or start + off + nbytes > len(body):
            raise StateError(f"{name}: bad array entry {arr_name!r}")
        arrays[arr_name] = np.frombuffer(body, dtype=dt, count=count, offset=start + off).copy()
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise StateError(f"{name}: missing arrays {missing}")
    extras = {k[6:]: v for k, v in arrays.items() if k.startswith("extra:")}
    return BookState(
        symbols=h.symbols,
        assets=h.assets,
        account_ids=h.account_ids,
        sub_labels=h.sub_labels,
        last_event_ts=h.last_event_ts,
        max_correction=h.max_correction,
        created_ms=h.created_ms,
        offsets={(t, p): o for t, p, o in h.offsets},
        account_extras=extras,
        meta=h.meta,
        **{k: arrays[k] for k in _ARRAYS},
    )


class _Offsets(msgspec.Struct):
    offsets: list[tuple[str, int, int]]


def read_offsets(path: str | Path) -> dict[tuple[str, int], int] | None:
    """The offsets in a snapshot file's header, without reading (or verifying) the
    arrays: a cheap look before overwriting it. None when there is no readable file."""
    try:
        with open(path, "rb") as fh:
            frame = fh.read(_FRAME.size)
            if len(frame) < _FRAME.size:
                return None
            magic, version, hlen = _FRAME.unpack(frame)
            if magic != MAGIC or version != FORMAT_VERSION or hlen > 1 << 31:
                return None
            header = msgspec.json.decode(fh.read(hlen), type=_Offsets)
    except (OSError, msgspec.DecodeError):
        return None
    return {(t, p): o for t, p, o in header.offsets}
