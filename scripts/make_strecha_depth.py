"""Sparse real depth for `train depth` from the Strecha multi-view scenes: the 3D points of each
scene's tracks (LIFT's correspondence builder, dl_perception/datasets/strecha.py: SIFT matches
kept by the ground-truth epipolar geometry, triangulated, re-projected) give metric depth in
every view that observes them (`sparse_depth`: a disc of --radius pixels per point, the nearest
point winning), written as a NYU-style folder per scene: OUT/<scene>/rgb_<name>.jpg (a link to
the shared image) beside OUT/<scene>/sync_depth_<name>.png (uint16 mm, 0 = none).
fountain-P11, LIFT's held-out scene, is refused.

    .venv/bin/python scripts/make_strecha_depth.py runs/depth/strecha --track-cache runs/lift/tracks \\
        --scenes ../shared/data/strecha_mvs/{entry-P10,Herz-Jesus-P8,Herz-Jesus-P25,castle-P19,castle-P30}
"""
import argparse
import os

import cv2
import numpy as np

from dl_perception.datasets.strecha import sparse_depth
from dl_perception.training.common import TrainingDataError
from dl_perception.training.lift import SceneSet, refuse_validation_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--scenes", nargs="+", required=True)
    parser.add_argument("--track-cache", help="folder of the scenes' tracks (built if missing)")
    parser.add_argument("--radius", type=int, default=4, help="disc radius in pixels (default 4)")
    args = parser.parse_args()
    try:
        for scene in args.scenes:
            refuse_validation_data(scene)  # fountain-P11, LIFT's held-out scene
    except TrainingDataError as error:
        raise SystemExit(str(error))
    for name, views, tracks in SceneSet(args.scenes, args.track_cache).scenes:
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        for index, view in enumerate(views):
            shape = cv2.imread(view.path, cv2.IMREAD_GRAYSCALE).shape
            depth = sparse_depth(view, tracks, index, shape, args.radius)
            millimetres = np.round(np.nan_to_num(depth) * 1000)
            # beyond 65.5 m the format has no value: no depth rather than a wrong one
            cv2.imwrite(os.path.join(folder, f"sync_depth_{view.name}.png"),
                        np.where(millimetres <= 65534, millimetres, 0).astype(np.uint16))
            link = os.path.join(folder, f"rgb_{view.name}{os.path.splitext(view.path)[1]}")
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(view.path), link)
        points = np.bincount(tracks.view, minlength=len(views))
        print(f"{name}: {len(views)} views, {int(np.median(points))} points per view (median)")


if __name__ == "__main__":
    main()
