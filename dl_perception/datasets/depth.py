"""RGB + depth pairs for `dl-perception train depth` / `eval depth`, from six folder layouts
(docs/depth.md, "Data"):

- sequence: the recorded-sequence layout (docs/datasets.md); `depth/*.png` uint16 millimetres,
  0 = no return. A folder holding sequence folders stands for all of them.
- nyu: NYU-Depth-style exports, uint16 PNG in millimetres, 0 = no measurement. Either
  `<any folder>/rgb_N.jpg|png` beside `sync_depth_N.png` (the "sync" export of the raw NYU v2
  scenes), or `DATASET/rgb/NAME.jpg|png` beside `DATASET/depth/NAME.png`.
- kitti: the KITTI depth benchmark's annotated depth, uint16 PNG, metres = value / 256, 0 = no
  measurement: `<drive>/proj_depth/groundtruth/image_0{2,3}/NAME.png` with the raw frame at
  `<drive>/image_0{2,3}/data/NAME.png` (the raw drive folder and the annotation folder merged or
  linked into one).
- tum: the TUM RGB-D layout, `rgb/NAME.png` and `depth/NAME.png` (uint16, 5000 per metre) paired
  by `associations.txt` (lines `t_rgb rgb/NAME.png t_depth depth/NAME.png`), or by equal names.
- visp: ViSP's `mbt-depth` RGB-D recordings (Debian package visp-images-data, the castel
  sequence): `image_NNNN.pgm` beside `depth_image_NNNN.bin` (two little-endian uint32, height and
  width, then uint16 values, VISP_DEPTH_UNIT metres each), in the depth camera's frame; the
  parent folder holds the two cameras' intrinsics (`chateau_depth.xml`, `chateau.xml`) and
  `depth_M_color.txt` (4x4, colour frame -> depth frame), with which every depth map is
  registered into the colour image (`register_depth`).
- middlebury: a rectified stereo pair's left image with ground-truth disparity, `NAMEL.jpg|png`
  beside `NAMEGT.png` (Middlebury 2005/2006 as OpenCV ships the Aloe pair: 8-bit PNG, value =
  disparity in pixels of that image, 0 = unknown) or `im0.png` + `disp0.pfm` + `calib.txt`
  (Middlebury 2014). Depth = f * B / (d + doffs): with calib.txt in metres; without it the scale is
  unknown (f * B = 1, so depth is relative: only median-scaled errors mean anything) and doffs
  is `--doffs` (default 0; docs/depth.md on what that assumes).
"""
from __future__ import annotations

import glob
import os
import re
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from .sequence import DEPTH_SCALE as SEQUENCE_DEPTH_SCALE
from .sequence import FORMAT as SEQUENCE_FORMAT
from .sequence import read_sequence

FORMATS = ("auto", "sequence", "nyu", "kitti", "tum", "visp", "middlebury")
NYU_DEPTH_SCALE = 1000.0  # PNG value per metre
KITTI_DEPTH_SCALE = 256.0
TUM_DEPTH_SCALE = 5000.0
VISP_DEPTH_UNIT = 0.000124986647  # metres per raw unit of the castel SR300 maps (ViSP's example)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass
class DepthSample:
    image: str  # RGB file
    depth: str  # uint16 PNG
    depth_scale: float  # PNG value per metre
    source: str  # the dataset folder it came from (a sequence folder, or the dataset root)
    kind: str = "png"  # how `depth` is stored: png (uint16), visp (raw .bin), disparity
    calibration: dict | None = None  # visp: cameras and extrinsics; disparity: f*B, doffs
    metric: bool = True  # False: depth known only up to scale (uncalibrated stereo)


def load_rgb(path: str) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


SATURATED = 65535  # the PNG's largest value: at least that far, not a measurement


def read_single_channel(path: str, dtype, what: str) -> np.ndarray:
    """A single-channel image of `dtype` (uint16 depth, uint8 disparity), else a clear error."""
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot read {what} {path}")
    if raw.dtype != dtype or raw.ndim != 2:
        bits = np.dtype(dtype).itemsize * 8
        raise ValueError(f"{path}: {what} PNGs must be single-channel {bits}-bit, got "
                         f"{raw.dtype} with shape {raw.shape}")
    return raw


def load_depth(path: str, depth_scale: float) -> np.ndarray:
    """Metric depth (float32 metres), NaN where there is no measurement: PNG value 0, or 65535
    (saturated: beyond the format's range, e.g. the simulator's sky)."""
    raw = read_single_channel(path, np.uint16, "depth")
    depth = raw.astype(np.float32) / np.float32(depth_scale)
    depth[(raw == 0) | (raw == SATURATED)] = np.nan
    return depth


def load_sample_depth(sample: DepthSample) -> np.ndarray:
    """The sample's ground truth as float32 depth on its image's grid, NaN = none (metres, or
    relative units when `sample.metric` is False)."""
    if sample.kind == "png":
        return load_depth(sample.depth, sample.depth_scale)
    if sample.kind == "visp":
        return register_depth(read_visp_depth(sample.depth), **sample.calibration)
    if sample.kind == "disparity":
        return disparity_to_depth(read_disparity(sample.depth), **sample.calibration)
    raise ValueError(f"{sample.depth}: unknown depth kind '{sample.kind}'")


# --- ViSP mbt-depth (castel) ------------------------------------------------------------------
def read_visp_depth(path: str) -> np.ndarray:
    """A ViSP depth .bin (uint32 height, uint32 width, then height*width uint16, little-endian) as
    float32 metres, NaN where the sensor gave 0."""
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 8:
        raise ValueError(f"{path}: truncated ViSP depth file ({len(data)} bytes)")
    height, width = np.frombuffer(data[:8], "<u4")
    expected = 8 + 2 * int(height) * int(width)
    if not (0 < height <= 10000 and 0 < width <= 10000) or len(data) != expected:
        raise ValueError(f"{path}: not a ViSP depth map ({height}x{width} header, {len(data)} "
                         f"bytes, expected {expected})")
    raw = np.frombuffer(data[8:], "<u2").reshape(int(height), int(width))
    depth = raw.astype(np.float32) * np.float32(VISP_DEPTH_UNIT)
    depth[raw == 0] = np.nan
    return depth


def read_visp_intrinsics(path: str) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) from the <camera> block (px, py, u0, v0) of a ViSP tracker XML file."""
    import xml.etree.ElementTree as ElementTree

    camera = ElementTree.parse(path).getroot().find("camera")
    if camera is None:
        raise ValueError(f"{path}: no <camera> block")
    try:
        return tuple(float(camera.find(tag).text) for tag in ("px", "py", "u0", "v0"))
    except (AttributeError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: <camera> needs px, py, u0, v0") from error


def register_depth(depth: np.ndarray, depth_intrinsics, color_intrinsics, color_size,
                   depth_M_color) -> np.ndarray:
    """Depth map of the depth camera -> depth along the colour camera's optical axis on the
    colour image grid: back-project, move into the colour frame (X_color = depth_M_color^-1
    X_depth), project, keep the nearest point per pixel. Colour pixels no depth pixel lands on
    (the colour camera samples finer) take the median of their 3x3 neighbours when those agree
    within 2% (the same surface); the rest stay NaN."""
    fx, fy, cx, cy = depth_intrinsics
    v, u = np.nonzero(np.isfinite(depth))
    z = depth[v, u].astype(np.float64)
    points = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z, np.ones_like(z)])
    colour = np.linalg.inv(np.asarray(depth_M_color, np.float64)) @ points
    in_front = colour[2] > 1e-6
    colour = colour[:, in_front]
    fx, fy, cx, cy = color_intrinsics
    width, height = color_size
    cu = np.round(fx * colour[0] / colour[2] + cx).astype(np.int64)
    cv = np.round(fy * colour[1] / colour[2] + cy).astype(np.int64)
    inside = (cu >= 0) & (cu < width) & (cv >= 0) & (cv < height)
    registered = np.full(height * width, np.inf)
    np.minimum.at(registered, cv[inside] * width + cu[inside], colour[2, inside])
    registered = registered.reshape(height, width).astype(np.float32)
    registered[~np.isfinite(registered)] = np.nan
    return fill_isolated_holes(registered)


def fill_isolated_holes(depth: np.ndarray, agreement: float = 0.02) -> np.ndarray:
    """NaN pixels take the median of their valid 3x3 neighbours (at least 4) when the neighbours
    lie within `agreement` of each other (one surface, not across a depth edge)."""
    padded = np.pad(depth, 1, constant_values=np.nan)
    height, width = depth.shape
    windows = np.stack([padded[dy:dy + height, dx:dx + width]
                        for dy in range(3) for dx in range(3)])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
        count = np.isfinite(windows).sum(0)
        low, high = np.nanmin(windows, 0), np.nanmax(windows, 0)
        median = np.nanmedian(windows, 0)
        fill = np.isnan(depth) & (count >= 4) & (high <= low * (1 + agreement))
    filled = depth.copy()
    filled[fill] = median[fill]
    return filled


def _visp_samples(root: str) -> list[DepthSample]:
    samples = []
    for path in sorted(glob.glob(os.path.join(root, "**", "depth_image_*.bin"), recursive=True)):
        folder = os.path.dirname(path)
        index = re.fullmatch(r"depth_image_(\d+)\.bin", os.path.basename(path)).group(1)
        image = os.path.join(folder, f"image_{index}.pgm")
        calibration = _visp_calibration(folder)
        if os.path.isfile(image) and calibration:
            samples.append(DepthSample(image, path, 1.0, folder, "visp", calibration))
    return samples


def _visp_calibration(folder: str) -> dict | None:
    """Cameras and extrinsics from the sequence folder or its parent (castel keeps them there);
    the colour image size is read from the first frame."""
    for base in (folder, os.path.dirname(folder)):
        depth_xml = glob.glob(os.path.join(base, "*_depth.xml"))
        extrinsics = os.path.join(base, "depth_M_color.txt")
        if len(depth_xml) == 1 and os.path.isfile(extrinsics):
            color_xml = depth_xml[0][:-len("_depth.xml")] + ".xml"
            if not os.path.isfile(color_xml):
                continue
            first = sorted(glob.glob(os.path.join(folder, "image_*.pgm")))[0]
            image = cv2.imread(first, cv2.IMREAD_UNCHANGED)
            if image is None:
                raise ValueError(f"cannot read image {first}")
            matrix = np.loadtxt(extrinsics)
            if matrix.shape != (4, 4):
                raise ValueError(f"{extrinsics}: expected a 4x4 matrix, got {matrix.shape}")
            return {"depth_intrinsics": read_visp_intrinsics(depth_xml[0]),
                    "color_intrinsics": read_visp_intrinsics(color_xml),
                    "color_size": (image.shape[1], image.shape[0]),
                    "depth_M_color": matrix.tolist()}
    return None


# --- Middlebury-style stereo ground truth --------------------------------------------------------
def read_pfm(path: str) -> np.ndarray:
    """A greyscale PFM (Pf) as float32, rows top-down; inf = unknown (Middlebury 2014)."""
    with open(path, "rb") as handle:
        header = handle.readline().strip()
        if header != b"Pf":
            raise ValueError(f"{path}: not a greyscale PFM (header {header[:8]!r})")
        width, height = (int(x) for x in handle.readline().split())
        scale = float(handle.readline())
        data = np.frombuffer(handle.read(), "<f4" if scale < 0 else ">f4")
    if data.size != width * height:
        raise ValueError(f"{path}: truncated PFM ({data.size} of {width * height} values)")
    return np.flipud(data.reshape(height, width)).astype(np.float32)


def write_pfm(path: str, values: np.ndarray) -> None:
    """`values` as a greyscale little-endian PFM (rows bottom-up, the format's order): what
    `read_pfm` reads back."""
    height, width = values.shape
    with open(path, "wb") as handle:
        handle.write(f"Pf\n{width} {height}\n-1.0\n".encode())
        handle.write(np.flipud(values).astype("<f4").tobytes())


def read_disparity(path: str) -> np.ndarray:
    """Ground-truth disparity in pixels, NaN = unknown: a PFM (inf unknown), or an 8-bit PNG
    (value = disparity, 0 unknown)."""
    if path.endswith(".pfm"):
        disparity = read_pfm(path)
    else:
        raw = read_single_channel(path, np.uint8, "disparity")
        disparity = raw.astype(np.float32)
        disparity[raw == 0] = np.nan
    disparity[~np.isfinite(disparity)] = np.nan
    return disparity


def disparity_to_depth(disparity: np.ndarray, focal_baseline: float, doffs: float
                       ) -> np.ndarray:
    """Depth = f * B / (d + doffs); NaN where the disparity is unknown or d + doffs <= 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        total = disparity + np.float32(doffs)
        depth = np.float32(focal_baseline) / total
    depth[~(total > 0)] = np.nan
    return depth.astype(np.float32)


def read_middlebury_calib(path: str) -> dict:
    """calib.txt of Middlebury 2014: cam0=[f 0 cx; ...], doffs, baseline (mm) -> f*B in metres."""
    values = {}
    with open(path) as handle:
        for line in handle:
            if "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    try:
        focal = float(values["cam0"].strip("[]").split()[0])
        return {"focal_baseline": focal * float(values["baseline"]) / 1000.0,
                "doffs": float(values["doffs"])}
    except (KeyError, ValueError, IndexError) as error:
        raise ValueError(f"{path}: needs cam0, baseline and doffs") from error


def _middlebury_samples(root: str, doffs: float = 0.0) -> list[DepthSample]:
    samples = []
    for folder, _, files in sorted(os.walk(root)):
        names = set(files)
        if "disp0.pfm" in names and "im0.png" in names and "calib.txt" in names:
            samples.append(DepthSample(os.path.join(folder, "im0.png"),
                                       os.path.join(folder, "disp0.pfm"), 1.0, folder,
                                       "disparity",
                                       read_middlebury_calib(os.path.join(folder, "calib.txt"))))
        for name in sorted(names):
            match = re.fullmatch(r"(\w+?)GT\.png", name)
            if match:
                image = _image_beside(folder, match.group(1) + "L")
                if image:
                    samples.append(DepthSample(image, os.path.join(folder, name), 1.0, folder,
                                               "disparity",
                                               {"focal_baseline": 1.0, "doffs": doffs},
                                               metric=False))
    return samples


# --- TUM RGB-D ---------------------------------------------------------------------------------
def _tum_samples(root: str) -> list[DepthSample]:
    """Pairs from associations.txt when present (each line: t rgb/NAME t depth/NAME), else the
    PNGs of rgb/ and depth/ with equal names."""
    pairs = []
    associations = os.path.join(root, "associations.txt")
    if os.path.isfile(associations):
        with open(associations) as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 4 and not line.startswith("#"):
                    first, second = fields[1], fields[3]
                    rgb, depth = (first, second) if first.startswith("rgb") else (second, first)
                    pairs.append((os.path.join(root, rgb), os.path.join(root, depth)))
    else:
        for path in sorted(glob.glob(os.path.join(root, "depth", "*.png"))):
            pairs.append((os.path.join(root, "rgb", os.path.basename(path)), path))
    return [DepthSample(rgb, depth, TUM_DEPTH_SCALE, root) for rgb, depth in pairs
            if os.path.isfile(rgb) and os.path.isfile(depth)]


def is_sequence(folder: str) -> bool:
    import json
    meta = os.path.join(folder, "meta.json")
    if not os.path.isfile(meta):
        return False
    try:
        with open(meta) as handle:
            return json.load(handle).get("format") == SEQUENCE_FORMAT
    except (OSError, ValueError):
        return False


def sequence_folders(folder: str) -> list[str]:
    """The folder itself when it is a sequence, else the sequences directly inside it."""
    if is_sequence(folder):
        return [folder]
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if is_sequence(os.path.join(folder, name)))


def _sequence_samples(folder: str) -> list[DepthSample]:
    sequence = read_sequence(folder)
    return [DepthSample(f.image, f.depth, SEQUENCE_DEPTH_SCALE, folder)
            for f in sequence.frames if f.depth]


def _image_beside(folder: str, stem: str) -> str | None:
    for extension in IMAGE_EXTENSIONS:
        path = os.path.join(folder, stem + extension)
        if os.path.isfile(path):
            return path
    return None


def _nyu_samples(root: str) -> list[DepthSample]:
    samples = []
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            match = re.fullmatch(r"sync_depth_(\w+)\.png", name)
            if match:
                image = _image_beside(folder, f"rgb_{match.group(1)}")
                if image:
                    samples.append(DepthSample(image, os.path.join(folder, name),
                                               NYU_DEPTH_SCALE, root))
    depth_dir, rgb_dir = os.path.join(root, "depth"), os.path.join(root, "rgb")
    if os.path.isdir(depth_dir) and os.path.isdir(rgb_dir):
        for path in sorted(glob.glob(os.path.join(depth_dir, "*.png"))):
            image = _image_beside(rgb_dir, os.path.splitext(os.path.basename(path))[0])
            if image:
                samples.append(DepthSample(image, path, NYU_DEPTH_SCALE, root))
    return samples


def _kitti_samples(root: str) -> list[DepthSample]:
    samples = []
    pattern = os.path.join(root, "**", "proj_depth", "groundtruth", "image_0[23]", "*.png")
    for path in sorted(glob.glob(pattern, recursive=True)):
        camera_dir = os.path.dirname(path)
        drive = os.path.dirname(os.path.dirname(os.path.dirname(camera_dir)))
        image = os.path.join(drive, os.path.basename(camera_dir), "data", os.path.basename(path))
        if os.path.isfile(image):
            samples.append(DepthSample(image, path, KITTI_DEPTH_SCALE, root))
    return samples


def detect_format(folder: str) -> str:
    if sequence_folders(folder):
        return "sequence"
    if glob.glob(os.path.join(folder, "**", "proj_depth", "groundtruth"), recursive=True):
        return "kitti"
    if os.path.isfile(os.path.join(folder, "associations.txt")):
        return "tum"
    if _visp_samples(folder):
        return "visp"
    if _middlebury_samples(folder):
        return "middlebury"
    if _nyu_samples(folder):
        return "nyu"
    raise ValueError(
        f"{folder}: no depth data found (expected a sequence folder or a folder of them, a "
        "NYU-style folder with rgb_N/sync_depth_N.png or rgb/ + depth/, a KITTI-style folder "
        "with <drive>/proj_depth/groundtruth/image_02/, a TUM folder with associations.txt, "
        "ViSP depth_image_N.bin + image_N.pgm, or a Middlebury NAMEL + NAMEGT.png pair; see "
        "docs/depth.md)")


def read_depth_dataset(folder: str, fmt: str = "auto", doffs: float = 0.0) -> list[DepthSample]:
    """All RGB + depth pairs of one dataset folder; raises ValueError when there are none.
    `doffs`: the disparity offset of uncalibrated Middlebury-style pairs."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown depth dataset format '{fmt}' (one of {', '.join(FORMATS)})")
    if not os.path.isdir(folder):
        raise ValueError(f"dataset folder not found: {folder}")
    fmt = detect_format(folder) if fmt == "auto" else fmt
    if fmt == "sequence":
        samples = [s for seq in sequence_folders(folder) for s in _sequence_samples(seq)]
    elif fmt == "nyu":
        samples = _nyu_samples(folder)
    elif fmt == "tum":
        samples = _tum_samples(folder)
    elif fmt == "visp":
        samples = _visp_samples(folder)
    elif fmt == "middlebury":
        samples = _middlebury_samples(folder, doffs)
    else:
        samples = _kitti_samples(folder)
    if not samples:
        raise ValueError(f"{folder}: no RGB + depth pairs in the {fmt} layout")
    return samples


# --- real image sequences for self-supervision (docs/depth.md, "Self-supervision") -------------
@dataclass
class PosedImage:
    image: str
    K: np.ndarray  # 3x3, pixels of the image file
    T_camera_world: np.ndarray  # 4x4, metres
    scene: str


def read_video_frames(folder: str) -> list[str]:
    """The image files of a folder of consecutive frames, in name order (= time order for
    timestamped or zero-padded names, e.g. udacity_hmb3's frame_<ns>.jpg)."""
    if not os.path.isdir(folder):
        raise ValueError(f"video folder not found: {folder}")
    frames = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                    if name.lower().endswith(IMAGE_EXTENSIONS))
    if len(frames) < 3:
        raise ValueError(f"{folder}: a video needs at least 3 frames, found {len(frames)}")
    return frames


def read_posed_images(root: str) -> list[PosedImage]:
    """Multi-view images with known cameras: every `<scene>/cameras.csv` under `root` (columns
    image, fx, fy, cx, cy, r11..r33, t1..t3: X_camera = R X_world + t, metres; as strecha_mvs
    provides them) with its images in `<scene>/images/`."""
    import csv
    images = []
    for path in sorted(glob.glob(os.path.join(root, "**", "cameras.csv"), recursive=True)):
        scene = os.path.dirname(path)
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    K = np.array([[float(row["fx"]), 0, float(row["cx"])],
                                  [0, float(row["fy"]), float(row["cy"])], [0, 0, 1]])
                    T = np.eye(4)
                    T[:3, :3] = np.array([float(row[f"r{i}{j}"]) for i in range(1, 4)
                                          for j in range(1, 4)]).reshape(3, 3)
                    T[:3, 3] = [float(row[f"t{i}"]) for i in range(1, 4)]
                except (KeyError, ValueError) as error:
                    raise ValueError(f"{path}: bad camera row {row}") from error
                image = os.path.join(scene, "images", row["image"])
                if os.path.isfile(image):
                    images.append(PosedImage(image, K, T, os.path.basename(scene)))
    if not images:
        raise ValueError(f"{root}: no <scene>/cameras.csv with images found")
    return images
