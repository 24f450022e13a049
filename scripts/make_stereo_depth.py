"""Real indoor depth for `train depth --sparse` from a calibrated stereo pair sequence
(dl_perception/datasets/stereo.py): opencv-doc's stereo calibration pairs left01.jpg/right01.jpg
... (an office, a person holding a chessboard) by default. The rig is calibrated from the board,
each pair rectified and matched (semi-global matching, left-right consistency), and written as a
NYU-style folder: OUT/rgb_<name>.png (the rectified left image) beside OUT/sync_depth_<name>.png
(uint16 mm, 0 = no consistent match). Metric scale rests on --square-size (not published with
those images; the board is about 30 cm wide, so 0.03 m); only the pairs leftNN/rightNN are read,
never the Aloe pair of the same folder (a depth validation set).

    .venv/bin/python scripts/make_stereo_depth.py runs/depth/office_stereo
"""
import argparse
import os

import cv2
import numpy as np

from dl_perception.datasets.stereo import StereoRectifier, calibrate_stereo, stereo_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--pairs", default="/usr/share/doc/opencv-doc/examples/data",
                        help="folder of leftNN/rightNN images showing a 9x6 chessboard "
                             "(default: opencv-doc's)")
    parser.add_argument("--square-size", type=float, default=0.03, metavar="METRES")
    args = parser.parse_args()
    pairs = stereo_pairs(args.pairs)
    if not pairs:
        raise SystemExit(f"no leftNN/rightNN image pairs in {args.pairs}")
    try:
        calibration = calibrate_stereo(pairs, args.square_size)
        rectifier = StereoRectifier(calibration)
    except ValueError as error:  # board not found often enough, unreadable image, swapped rig
        raise SystemExit(f"error: {error}")
    print(f"{len(pairs)} pairs, board seen in {calibration.pairs_used}; reprojection error "
          f"{calibration.rms_px:.2f} px; baseline {rectifier.baseline:.3f} m, rectified focal "
          f"{rectifier.focal:.1f} px")
    os.makedirs(args.out, exist_ok=True)
    for left_path, right_path in pairs:
        name = os.path.splitext(os.path.basename(left_path))[0]
        result = rectifier.depth(cv2.imread(left_path), cv2.imread(right_path))
        millimetres = np.round(np.nan_to_num(result.depth) * 1000)
        cv2.imwrite(os.path.join(args.out, f"sync_depth_{name}.png"),
                    np.where(millimetres <= 65534, millimetres, 0).astype(np.uint16))
        cv2.imwrite(os.path.join(args.out, f"rgb_{name}.png"), result.image)
        valid = np.isfinite(result.depth)
        print(f"{name}: depth at {valid.mean():.0%} of the pixels, median "
              f"{np.median(result.depth[valid]):.2f} m")


if __name__ == "__main__":
    main()
