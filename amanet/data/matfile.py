"""Read (and, for tests and fixtures, write) MATLAB level-5 ``.mat`` files.

The DensePose side files (``SMPL_subdiv.mat``, ``SMPL_SUBDIV_TRANSFORM.mat``,
``UV_symmetry_transforms.mat``) are MAT v5 files holding numeric matrices and cell arrays.
:func:`loadmat` uses ``scipy.io.loadmat`` when scipy is installed and otherwise a small
built-in reader of the v5 layout (the published MathWorks format) that understands what those
files need: numeric and logical matrices (any storage type), char arrays, cell arrays and
structs, zlib-compressed or not, either byte order. Sparse and object (MCOS) arrays raise an
error that names ``pip install scipy`` as the way out. v7.3 files (HDF5) are not v5 files;
they raise too.

Both readers return ``{name: value}``; numeric values are 2-D (or N-D) arrays in MATLAB's
shape, cell arrays are ``object`` arrays of that shape (``cells[0, i]``), as scipy returns them.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from typing import Any, BinaryIO, Dict, Tuple, Union

import numpy as np

# data types (miXXX)
_MI_INT8, _MI_UINT8, _MI_INT16, _MI_UINT16, _MI_INT32, _MI_UINT32 = 1, 2, 3, 4, 5, 6
_MI_SINGLE, _MI_DOUBLE, _MI_INT64, _MI_UINT64 = 7, 9, 12, 13
_MI_MATRIX, _MI_COMPRESSED, _MI_UTF8, _MI_UTF16, _MI_UTF32 = 14, 15, 16, 17, 18
_MI_DTYPES = {_MI_INT8: "i1", _MI_UINT8: "u1", _MI_INT16: "i2", _MI_UINT16: "u2",
              _MI_INT32: "i4", _MI_UINT32: "u4", _MI_SINGLE: "f4", _MI_DOUBLE: "f8",
              _MI_INT64: "i8", _MI_UINT64: "u8", _MI_UTF8: "u1", _MI_UTF16: "u2",
              _MI_UTF32: "u4"}
# array classes (mxXXX_CLASS)
_MX_CELL, _MX_STRUCT, _MX_OBJECT, _MX_CHAR, _MX_SPARSE = 1, 2, 3, 4, 5
_MX_DTYPES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4",
              14: "i8", 15: "u8"}
_SCIPY_HINT = "install scipy (pip install scipy) to read this file"


class MatFileError(ValueError):
    pass


def loadmat(path: Union[str, os.PathLike], prefer_scipy: bool = True) -> Dict[str, Any]:
    """``{variable name: value}`` of a MAT v5 file (scipy's reader when available)."""
    path = os.fspath(path)
    if prefer_scipy:
        try:
            import scipy.io  # type: ignore
        except ImportError:
            pass
        else:
            return {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    with open(path, "rb") as f:
        return read_mat_v5(f, name=path)


def read_mat_v5(f: BinaryIO, name: str = "<stream>") -> Dict[str, Any]:
    header = f.read(128)
    if len(header) < 128:
        raise MatFileError(f"{name}: too short to be a MAT file")
    if header.startswith(b"\x89HDF") or header[:116].lstrip().startswith(b"MATLAB 7.3"):
        raise MatFileError(f"{name}: a MAT v7.3 (HDF5) file is not supported; save it with "
                           "-v7 or " + _SCIPY_HINT + " and h5py")
    endian = header[126:128]
    if endian == b"IM":
        bo = "<"
    elif endian == b"MI":
        bo = ">"
    else:
        raise MatFileError(f"{name}: not a MAT v5 file (no endian indicator)")
    out: Dict[str, Any] = {}
    data = f.read()
    pos = 0
    while pos + 8 <= len(data):
        typ, payload, pos = _read_element(data, pos, bo, name)
        if typ == _MI_COMPRESSED:
            inner = zlib.decompress(payload)
            ityp, ipayload, _ = _read_element(inner, 0, bo, name)
            if ityp != _MI_MATRIX:
                continue
            var_name, value = _parse_matrix(ipayload, bo, name)
        elif typ == _MI_MATRIX:
            var_name, value = _parse_matrix(payload, bo, name)
        else:
            continue
        out[var_name] = value
    return out


def _read_element(buf: bytes, pos: int, bo: str, name: str) -> Tuple[int, bytes, int]:
    """(type, payload bytes, next position) of the data element at ``pos``."""
    typ, nbytes = struct.unpack_from(bo + "II", buf, pos)
    if typ >> 16:  # small data element: size in the upper half, data in the same 8 bytes
        nbytes, typ = typ >> 16, typ & 0xFFFF
        return typ, buf[pos + 4:pos + 4 + nbytes], pos + 8
    start = pos + 8
    end = start + nbytes
    if end > len(buf):
        raise MatFileError(f"{name}: truncated data element")
    nxt = end if typ == _MI_COMPRESSED else start + ((nbytes + 7) // 8) * 8
    return typ, buf[start:end], nxt


def _numeric(typ: int, payload: bytes, bo: str, name: str) -> np.ndarray:
    if typ not in _MI_DTYPES:
        raise MatFileError(f"{name}: unsupported data type {typ}; " + _SCIPY_HINT)
    return np.frombuffer(payload, dtype=np.dtype(bo + _MI_DTYPES[typ]))


def _parse_matrix(payload: bytes, bo: str, name: str) -> Tuple[str, Any]:
    if not payload:  # an empty matrix (e.g. an empty cell)
        return "", np.zeros((0, 0))
    pos = 0
    typ, flags_raw, pos = _read_element(payload, pos, bo, name)
    flags = _numeric(typ, flags_raw, bo, name)
    mx_class = int(flags[0]) & 0xFF
    is_complex = bool(int(flags[0]) & 0x0800)
    is_logical = bool(int(flags[0]) & 0x0200)
    typ, dims_raw, pos = _read_element(payload, pos, bo, name)
    dims = tuple(int(d) for d in _numeric(typ, dims_raw, bo, name))
    typ, name_raw, pos = _read_element(payload, pos, bo, name)
    var_name = bytes(name_raw).decode("latin1")
    count = int(np.prod(dims)) if dims else 0

    if mx_class in _MX_DTYPES:
        typ, real_raw, pos = _read_element(payload, pos, bo, name)
        arr = _numeric(typ, real_raw, bo, name).astype(_MX_DTYPES[mx_class])
        if is_complex:
            typ, imag_raw, pos = _read_element(payload, pos, bo, name)
            arr = arr + 1j * _numeric(typ, imag_raw, bo, name).astype(_MX_DTYPES[mx_class])
        if arr.size != count:
            raise MatFileError(f"{name}: variable {var_name!r} has {arr.size} values for dims "
                               f"{dims}")
        arr = arr.reshape(dims, order="F")
        return var_name, arr.astype(bool) if is_logical else arr
    if mx_class == _MX_CHAR:
        typ, raw, pos = _read_element(payload, pos, bo, name)
        if typ == _MI_UTF8 or typ in (_MI_INT8, _MI_UINT8):
            text = bytes(raw).decode("utf-8", errors="replace")
            chars = np.array(list(text)) if text else np.zeros(0, "<U1")
        else:
            codes = _numeric(typ, raw, bo, name)
            chars = np.array([chr(int(c)) for c in codes]) if codes.size else np.zeros(0, "<U1")
        if chars.size == count and len(dims) == 2 and dims[0] <= 1:
            return var_name, np.array(["".join(chars.tolist())])
        return var_name, chars.reshape(dims, order="F") if chars.size == count else chars
    if mx_class == _MX_CELL:
        cells = np.empty(count, dtype=object)
        for k in range(count):
            typ, sub, pos = _read_element(payload, pos, bo, name)
            if typ != _MI_MATRIX:
                raise MatFileError(f"{name}: cell {k} of {var_name!r} is not a matrix")
            cells[k] = _parse_matrix(sub, bo, name)[1]
        return var_name, cells.reshape(dims, order="F")
    if mx_class == _MX_STRUCT:
        typ, raw, pos = _read_element(payload, pos, bo, name)
        flen = int(_numeric(typ, raw, bo, name)[0])
        typ, raw, pos = _read_element(payload, pos, bo, name)
        raw = bytes(raw)
        fields = [raw[i:i + flen].split(b"\0", 1)[0].decode("latin1")
                  for i in range(0, len(raw), flen)] if flen else []
        dtype = [(fname, object) for fname in fields]
        arr = np.empty(count, dtype=dtype)
        for k in range(count):
            for fname in fields:
                typ, sub, pos = _read_element(payload, pos, bo, name)
                arr[k][fname] = _parse_matrix(sub, bo, name)[1]
        return var_name, arr.reshape(dims, order="F")
    kind = {_MX_SPARSE: "sparse", _MX_OBJECT: "object"}.get(mx_class, f"class {mx_class}")
    raise MatFileError(f"{name}: variable {var_name!r} is a {kind} array, which the built-in "
                       "reader does not support; " + _SCIPY_HINT)


# ----------------------------------------------------------------------------- writing
def _element(typ: int, payload: bytes, bo: str = "<") -> bytes:
    if typ != _MI_MATRIX and typ != _MI_COMPRESSED and 0 < len(payload) <= 4:
        return struct.pack(bo + "I", (len(payload) << 16) | typ) + payload.ljust(4, b"\0")
    pad = (-len(payload)) % 8 if typ != _MI_COMPRESSED else 0
    return struct.pack(bo + "II", typ, len(payload)) + payload + b"\0" * pad


def _matrix_payload(name: str, value: Any) -> bytes:
    if isinstance(value, np.ndarray) and value.dtype == object:
        dims = value.shape if value.ndim >= 2 else (1, value.size)
        body = b"".join(_element(_MI_MATRIX, _matrix_payload("", v))
                        for v in value.reshape(dims).ravel(order="F"))
        mx_class = _MX_CELL
        flags = struct.pack("<II", mx_class, 0)
        return (_element(_MI_UINT32, flags) + _element(_MI_INT32, np.asarray(dims, "<i4").tobytes())
                + _element(_MI_INT8, name.encode("latin1")) + body)
    arr = np.asarray(value)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
        logical = 0x0200
    else:
        logical = 0
    if arr.ndim < 2:
        arr = arr.reshape(1, -1)
    inv = {v: k for k, v in _MX_DTYPES.items()}
    key = arr.dtype.newbyteorder("=").str[1:]
    if key not in inv:
        arr = arr.astype(np.float64)
        key = "f8"
    mi = {v: k for k, v in _MI_DTYPES.items() if k not in (_MI_UTF8, _MI_UTF16, _MI_UTF32)}[key]
    flags = struct.pack("<II", inv[key] | logical, 0)
    data = np.asarray(arr, dtype="<" + key).tobytes(order="F")
    dims = np.asarray(arr.shape, "<i4").tobytes()
    return (_element(_MI_UINT32, flags) + _element(_MI_INT32, dims)
            + _element(_MI_INT8, name.encode("latin1")) + _element(mi, data))


def savemat(path: Union[str, os.PathLike, BinaryIO], variables: Dict[str, Any],
            compress: bool = False) -> None:
    """Write numeric arrays and cell arrays (``object`` ndarrays) as a little-endian MAT v5 file.

    Meant for test fixtures and for converting tables; MATLAB and scipy read the result.
    """
    text = b"MATLAB 5.0 MAT-file, written by amanet"
    header = text.ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    buf = io.BytesIO()
    buf.write(header)
    for name, value in variables.items():
        el = _element(_MI_MATRIX, _matrix_payload(name, value))
        if compress:
            el = _element(_MI_COMPRESSED, zlib.compress(el))
        buf.write(el)
    if hasattr(path, "write"):
        path.write(buf.getvalue())  # type: ignore[union-attr]
    else:
        with open(os.fspath(path), "wb") as f:
            f.write(buf.getvalue())
