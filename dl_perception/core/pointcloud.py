"""sensor_msgs/PointCloud2 <-> numpy structured arrays, without ROS (duck-typed messages)."""
from __future__ import annotations

import sys

import numpy as np

# PointField datatype codes
_CODES = {np.dtype(np.int8): 1, np.dtype(np.uint8): 2, np.dtype(np.int16): 3,
          np.dtype(np.uint16): 4, np.dtype(np.int32): 5, np.dtype(np.uint32): 6,
          np.dtype(np.float32): 7, np.dtype(np.float64): 8}
_TYPES = {code: dtype for dtype, code in _CODES.items()}


def pack(columns: dict[str, np.ndarray]) -> dict:
    """Fields of a height-1 PointCloud2 holding `columns` (name -> (N,) or (N, count) array).
    Returns dict(fields=[(name, offset, datatype, count)], point_step, width, data, is_bigendian)."""
    sizes = {len(values) for values in columns.values()}
    if len(sizes) > 1:
        raise ValueError(f"columns have different lengths: { {k: len(v) for k, v in columns.items()} }")
    width = sizes.pop() if sizes else 0
    dtype = np.dtype([(name, values.dtype, values.shape[1:]) for name, values in columns.items()])
    records = np.empty(width, dtype=dtype)
    fields = []
    for name, values in columns.items():
        if values.dtype not in _CODES:
            raise ValueError(f"column {name}: unsupported dtype {values.dtype}")
        records[name] = values
        count = int(np.prod(values.shape[1:])) if values.ndim > 1 else 1
        fields.append((name, dtype.fields[name][1], _CODES[values.dtype], count))
    return {"fields": fields, "point_step": dtype.itemsize, "width": width,
            "data": records.tobytes(), "is_bigendian": sys.byteorder == "big"}


def unpack(msg) -> np.ndarray:
    """A PointCloud2 (any object with its fields) -> structured array of height*width points."""
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for field in msg.fields:
        base = _TYPES[field.datatype].newbyteorder(order)
        names.append(field.name)
        formats.append((base, (field.count,)) if field.count > 1 else base)
        offsets.append(field.offset)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                      "itemsize": msg.point_step})
    count = msg.width * msg.height
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size < count * msg.point_step:
        raise ValueError(f"PointCloud2 data has {buffer.size} bytes, needs {count * msg.point_step}")
    return np.frombuffer(buffer[: count * msg.point_step].tobytes(), dtype=dtype)
