"""Sparse real depth for `train depth --sparse` from video frames with a known camera but no
poses (dl_perception/datasets/two_view.py): each frame with its next one (the last with its
previous), SIFT matches kept by the essential matrix, triangulated; depth is known up to one
factor per frame, so each frame's depth is scaled to --median-depth (the scale-invariant loss
does not need more). Default: ../shared/data/tum_fr3_long_office (17 indoor frames about 1 s
apart, TUM fr3 intrinsics). Writes OUT/rgb_NNNN.<ext> (links to the frames) beside
OUT/sync_depth_NNNN.png (uint16 mm, 0 = none), NYU layout.

    .venv/bin/python scripts/make_video_depth.py runs/depth/tum_fr3_office
"""
import argparse
import os

import cv2
import numpy as np

from dl_perception.core.paths import shared_data_dir
from dl_perception.datasets.depth import read_video_frames
from dl_perception.datasets.two_view import draw_depth_discs, sift_matches, two_view_depth

TUM_FR3 = (535.4, 539.2, 320.1, 247.6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--frames", default=os.path.join(shared_data_dir(),
                                                         "tum_fr3_long_office", "rgb"))
    parser.add_argument("--intrinsics", nargs=4, type=float, default=TUM_FR3,
                        metavar=("FX", "FY", "CX", "CY"), help="default: TUM fr3")
    parser.add_argument("--median-depth", type=float, default=2.0, metavar="METRES")
    parser.add_argument("--radius", type=int, default=4, help="disc radius in pixels (default 4)")
    args = parser.parse_args()
    fx, fy, cx, cy = args.intrinsics
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    try:
        frames = read_video_frames(args.frames)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    grays = [cv2.imread(path, cv2.IMREAD_GRAYSCALE) for path in frames]
    unreadable = [path for path, gray in zip(frames, grays) if gray is None]
    if unreadable:
        raise SystemExit(f"error: cannot read {', '.join(unreadable)}")
    os.makedirs(args.out, exist_ok=True)
    for index, path in enumerate(frames):
        other = index + 1 if index + 1 < len(frames) else index - 1
        pixels, depth = two_view_depth(*sift_matches(grays[index], grays[other]), K)
        if len(depth) < 50:
            print(f"{os.path.basename(path)}: {len(depth)} points, skipped")
            continue
        depth = depth * (args.median_depth / np.median(depth))
        image = draw_depth_discs(pixels, depth, grays[index].shape, args.radius)
        millimetres = np.round(np.nan_to_num(image) * 1000)
        name = f"{index:04d}"
        cv2.imwrite(os.path.join(args.out, f"sync_depth_{name}.png"),
                    np.where(millimetres <= 65534, millimetres, 0).astype(np.uint16))
        link = os.path.join(args.out, f"rgb_{name}{os.path.splitext(path)[1]}")
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(path), link)
        print(f"{os.path.basename(path)}: {len(depth)} points, depth range "
              f"{np.percentile(depth, 5):.2f}-{np.percentile(depth, 95):.2f} m (scaled)")


if __name__ == "__main__":
    main()
