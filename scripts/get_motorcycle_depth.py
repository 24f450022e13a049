"""Real indoor metric depth for choosing depth checkpoints: the Middlebury 2014 "Motorcycle" scene
as the scikit-image wheel ships it (PyPI; `skimage.data.stereo_motorcycle`: the left image and
its ground-truth disparity, both down-sampled 4x, with the calibration of that size: f = 994.978
px, doffs = 31.086 px, baseline 193.001 mm). Written in the Middlebury 2014 layout that
`dl-perception eval depth` reads (`im0.png`, `disp0.pfm` with inf = unknown, `calib.txt`), so
depth = f * B / (d + doffs): a workshop about 2-6 m deep, one image.

    .venv/bin/python scripts/get_motorcycle_depth.py runs/depth/motorcycle

downloads the wheel (about 14 MB, no dependencies installed; `--wheel` takes one already here)
and prints the depth range. scikit-image itself is not a dependency of this project.
"""
from __future__ import annotations

import argparse
import glob
import io
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from dl_perception.datasets.depth import write_pfm

WHEEL = "scikit-image==0.26.0"  # the version checked; its data/ holds the motorcycle files
FOCAL, PRINCIPAL_X, PRINCIPAL_Y, DOFFS, BASELINE_MM = 994.978, 311.193, 254.877, 31.086, 193.001


def fetch_wheel(folder: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                           "--only-binary=:all:", "-q", "-d", folder, WHEEL])
    if done.returncode != 0:
        raise SystemExit(f"error: pip could not download {WHEEL} (no index reachable?); "
                         "download it elsewhere and pass it with --wheel")
    wheels = glob.glob(os.path.join(folder, "scikit_image-*.whl"))
    if not wheels:
        raise SystemExit(f"error: pip left no scikit-image wheel in {folder}")
    return wheels[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--wheel", help="a scikit-image wheel already downloaded")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        wheel = args.wheel or fetch_wheel(temporary)
        try:
            with zipfile.ZipFile(wheel) as archive:
                image = archive.read("skimage/data/motorcycle_left.png")
                with np.load(io.BytesIO(archive.read("skimage/data/motorcycle_disp.npz"))) as data:
                    disparity = data["arr_0"].astype(np.float32)
        except (OSError, KeyError, zipfile.BadZipFile, ValueError) as error:
            raise SystemExit(f"error: {wheel} holds no readable motorcycle data ({error})")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "im0.png"), "wb") as handle:
        handle.write(image)
    disparity[~np.isfinite(disparity)] = np.inf  # unknown, as in Middlebury's own PFMs
    write_pfm(os.path.join(args.out, "disp0.pfm"), disparity)
    height, width = disparity.shape
    with open(os.path.join(args.out, "calib.txt"), "w") as handle:
        handle.write(f"cam0=[{FOCAL} 0 {PRINCIPAL_X}; 0 {FOCAL} {PRINCIPAL_Y}; 0 0 1]\n"
                     f"doffs={DOFFS}\nbaseline={BASELINE_MM}\nwidth={width}\nheight={height}\n")
    known = disparity[np.isfinite(disparity)]
    depth = FOCAL * BASELINE_MM / 1000.0 / (known + DOFFS)
    print(f"wrote {args.out}: {width}x{height}, ground truth at {known.size / disparity.size:.0%} "
          f"of the pixels, depth {np.percentile(depth, 5):.2f}-{np.percentile(depth, 95):.2f} m "
          f"(5th-95th percentile)")


if __name__ == "__main__":
    main()
