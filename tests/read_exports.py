"""Reads a scan's surface.h5 (h5py) and surface.vtp (xml.etree) independently of
Ridgeline and prints what they hold as JSON, for tests/landscape_processes.rs."""
import json
import math
import sys
import xml.etree.ElementTree as ET

import h5py


def clean(values):
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


scan = sys.argv[1]
out = {}
with h5py.File(f"{scan}/surface.h5", "r") as f:
    out["keys"] = sorted(f.keys())
    for name in f.keys():
        d = f[name]
        out[name] = {
            "shape": list(d.shape),
            "dtype": str(d.dtype),
            "values": clean([float(v) for v in d[()].ravel()]),
            "attrs": {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in d.attrs.items()},
        }

root = ET.parse(f"{scan}/surface.vtp").getroot()
assert root.tag == "VTKFile" and root.get("type") == "PolyData", root.tag
piece = root.find("PolyData/Piece")


def array(path, name):
    for a in piece.findall(path + "/DataArray"):
        if a.get("Name") == name:
            return [float(v) for v in a.text.split()]
    raise KeyError(name)


out["vtp"] = {
    "points": int(piece.get("NumberOfPoints")),
    "polys": int(piece.get("NumberOfPolys")),
    "xyz": array("Points", "Points"),
    "zvalue": array("PointData", "zvalue"),
    "loss": array("PointData", "loss"),
    "averaged": array("CellData", "averaged zvalue"),
    "connectivity": [int(v) for v in array("Polys", "connectivity")],
    "offsets": [int(v) for v in array("Polys", "offsets")],
}
print(json.dumps(out))
