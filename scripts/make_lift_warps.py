"""Training-side homography pairs for choosing LIFT settings without the validation sets:
five synthetic warps (zoom 1.19 / 1.5 / 2.2 with 10 deg, 30 deg with zoom 0.8, a perspective
map) of six Strecha *training* images (never fountain-P11), in `eval features --pairs` layout;
with --opencv-doc the same warps of six opencv-doc photographs that no training or validation
uses (a held-out selection set; Debian package opencv-doc).

    .venv/bin/python scripts/make_lift_warps.py runs/lift/warps   # writes 30 pairs
    .venv/bin/python scripts/make_lift_warps.py --opencv-doc runs/lift/heldout_warps
"""
import math
import os
import sys

import cv2
import numpy as np

from dl_perception.core.paths import shared_data_dir

IMAGES = ("castle-P19/images/0004.jpg", "castle-P30/images/0010.jpg",
          "Herz-Jesus-P25/images/0005.jpg", "entry-P10/images/0003.jpg",
          "Herz-Jesus-P8/images/0002.jpg", "castle-P19/images/0012.jpg")
OPENCV_DOC = "/usr/share/doc/opencv-doc/examples/data"
# not graf (a validation pair) nor any image pair of a stereo or optical-flow example
OPENCV_DOC_IMAGES = ("building.jpg", "home.jpg", "aero1.jpg", "leuvenA.jpg", "box_in_scene.png",
                     "stuff.jpg")


def similarity(width: int, height: int, zoom: float, degrees: float) -> np.ndarray:
    """Zoom and turn about the image centre."""
    centre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1.0]])
    a = math.radians(degrees)
    turn = np.array([[zoom * math.cos(a), -zoom * math.sin(a), 0],
                     [zoom * math.sin(a), zoom * math.cos(a), 0], [0, 0, 1.0]])
    return np.linalg.inv(centre) @ turn @ centre


def main(out: str, opencv_doc: bool = False) -> None:
    os.makedirs(out, exist_ok=True)
    folder, images, prefix = (OPENCV_DOC, OPENCV_DOC_IMAGES, "o") if opencv_doc else \
        (os.path.join(shared_data_dir(), "strecha_mvs"), IMAGES, "s")
    for index, path in enumerate(images):
        image = cv2.imread(os.path.join(folder, path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise SystemExit(f"cannot read {path} under {folder}")
        height, width = image.shape
        warps = (("zoom1_5", similarity(width, height, 1.5, 0)),
                 ("rot30z0_8", similarity(width, height, 0.8, 30)),
                 ("zoom1_19", similarity(width, height, 2 ** 0.25, 0)),
                 ("zoom2_2r10", similarity(width, height, 2.2, 10)),
                 ("persp", np.array([[0.9, 0.15, 20], [-0.05, 1.0, 10], [2e-4, 1e-4, 1.0]])))
        for name, H in warps:
            shrinks = abs(np.linalg.det(H[:2, :2])) < 1
            warped = cv2.warpPerspective(image, H, (width, height),
                                         flags=cv2.INTER_AREA if shrinks else cv2.INTER_CUBIC)
            stem = os.path.join(out, f"{prefix}{index}{name}")
            cv2.imwrite(stem + "A.png", image)
            cv2.imwrite(stem + "B.png", warped)
            np.savetxt(stem + "_H_A_to_B.derived.txt", H)
    print(f"wrote {5 * len(images)} pairs to {out}")


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--opencv-doc"]
    if len(arguments) != 1:
        raise SystemExit(__doc__)
    main(arguments[0], opencv_doc="--opencv-doc" in sys.argv[1:])
