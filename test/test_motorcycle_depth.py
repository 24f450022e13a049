"""scripts/get_motorcycle_depth.py: the Middlebury layout it writes reads back as metric depth."""
import io
import os
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from dl_perception.core.paths import REPO_DIR


def test_wheel_becomes_a_middlebury_folder_with_metric_depth(tmp_path):
    from dl_perception.datasets.depth import load_sample_depth, read_depth_dataset
    disparity = np.full((40, 60), 20.0, np.float32)
    disparity[:, :30] = 60.0
    disparity[5, 7] = np.nan  # unknown in scikit-image's copy
    wheel = tmp_path / "scikit_image-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("skimage/data/motorcycle_left.png",
                         cv2.imencode(".png", np.full((40, 60, 3), 90, np.uint8))[1].tobytes())
        buffer = io.BytesIO()
        np.savez(buffer, disparity)
        archive.writestr("skimage/data/motorcycle_disp.npz", buffer.getvalue())
    out = tmp_path / "motorcycle"
    result = subprocess.run([sys.executable, os.path.join(REPO_DIR, "scripts",
                                                          "get_motorcycle_depth.py"), str(out),
                             "--wheel", str(wheel)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (sample,) = read_depth_dataset(str(out))
    depth = load_sample_depth(sample)
    assert sample.metric and depth.shape == (40, 60)
    focal_baseline = 994.978 * 0.193001
    assert depth[10, 45] == pytest.approx(focal_baseline / (20.0 + 31.086), rel=1e-4)
    assert depth[10, 5] == pytest.approx(focal_baseline / (60.0 + 31.086), rel=1e-4)
    assert np.isnan(depth[5, 7]) and np.isfinite(depth).sum() == 40 * 60 - 1


def test_a_wheel_without_the_data_is_a_clear_error(tmp_path):
    wheel = tmp_path / "scikit_image-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("skimage/__init__.py", "")
    result = subprocess.run([sys.executable, os.path.join(REPO_DIR, "scripts",
                                                          "get_motorcycle_depth.py"),
                             str(tmp_path / "out"), "--wheel", str(wheel)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "holds no readable motorcycle data" in result.stderr
    assert not (tmp_path / "out").exists()
