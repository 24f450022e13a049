"""Moving messages between two definitions of the same type (a bag recorded on another ROS
distribution, whose embedded definition differs from the local one, e.g. sensor_msgs/Range
gained `variance` in Jazzy): fields are matched by name, fields only the target has get their
zero value, fields only the source has are dropped."""
from __future__ import annotations

import numpy as np
from rosbags.interfaces import Nodetype

NUMPY_TYPES = {"bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8,
               "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32,
               "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
               "float32": np.float32, "float64": np.float64}


def same_layout(store_a, store_b, typename: str, _seen=None) -> bool:
    """Whether both typestores define `typename` (and every type it contains) identically, so
    CDR bytes of one are valid for the other."""
    seen = set() if _seen is None else _seen
    if typename in seen:
        return True
    seen.add(typename)
    if typename not in store_a.fielddefs or typename not in store_b.fielddefs:
        return False
    fields_a, fields_b = store_a.fielddefs[typename][1], store_b.fielddefs[typename][1]
    if fields_a != fields_b:
        return False
    return all(same_layout(store_a, store_b, name, seen) for name in _nested(fields_a))


def _nested(fields) -> list[str]:
    names = []
    for _, (kind, detail) in fields:
        if kind == Nodetype.NAME:
            names.append(detail)
        elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE) and detail[0][0] == Nodetype.NAME:
            names.append(detail[0][1])
    return names


def _zero(store, kind, detail):
    if kind == Nodetype.BASE:
        base = detail[0]
        return "" if base == "string" else False if base == "bool" else \
            0.0 if base.startswith("float") else 0
    if kind == Nodetype.NAME:
        return default_message(store, detail)
    (sub_kind, sub_detail), length = detail
    if sub_kind == Nodetype.BASE and sub_detail[0] in NUMPY_TYPES:
        return np.zeros(length if kind == Nodetype.ARRAY else 0, NUMPY_TYPES[sub_detail[0]])
    return [_zero(store, sub_kind, sub_detail) for _ in range(length if kind == Nodetype.ARRAY
                                                                  else 0)]


def default_message(store, typename: str):
    """A message of `typename` with every field at its zero value."""
    return store.types[typename](**{
        name: _zero(store, kind, detail) for name, (kind, detail) in store.fielddefs[typename][1]})


def translate(message, source, target, typename: str):
    """`message` (a dataclass of typestore `source`) as a dataclass of typestore `target`."""
    values = {}
    for name, (kind, detail) in target.fielddefs[typename][1]:
        if not hasattr(message, name):
            values[name] = _zero(target, kind, detail)
            continue
        value = getattr(message, name)
        if kind == Nodetype.NAME:
            value = translate(value, source, target, detail)
        elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE) and detail[0][0] == Nodetype.NAME:
            value = [translate(item, source, target, detail[0][1]) for item in value]
        values[name] = value
    return target.types[typename](**values)
