"""`dl-perception eval vo`: run the visual odometry over recorded sequences (docs/datasets.md),
write TUM-format trajectories and score them with evo (Grupp, https://github.com/MichaelGrupp/evo):
ATE (absolute trajectory error, translation, after Umeyama alignment: Sim(3) for up-to-scale
runs, SE(3) for metric ones) and RPE (relative pose error over `rpe_delta` frames), and plot
each estimate, aligned as the ATE aligns it, over the ground truth (top view, metres).
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from ..datasets.sequence import read_sequence
from ..core.geometry import matrix_to_quat
from ..core.progress import progress
from ..navigation.vo import DepthImage, Features, MonocularVO, VOConfig


@contextlib.contextmanager
def _evo_environment():
    """evo reads and writes settings under $HOME/.evo and may touch matplotlib: give it a
    throw-away HOME and a headless backend while it is imported and used."""
    saved = {k: os.environ.get(k) for k in ("HOME", "MPLBACKEND")}
    with tempfile.TemporaryDirectory(prefix="evo-home-") as home:
        os.environ["HOME"] = home
        os.environ.setdefault("MPLBACKEND", "Agg")
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def write_tum(path: str, stamps, poses) -> None:
    """TUM trajectory format: 'timestamp tx ty tz qx qy qz qw' per line."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("# timestamp tx ty tz qx qy qz qw\n")
        for stamp, pose in zip(stamps, poses):
            q = matrix_to_quat(pose[:3, :3])
            t = pose[:3, 3]
            handle.write(f"{stamp:.6f} {t[0]:.9f} {t[1]:.9f} {t[2]:.9f} "
                         f"{q[0]:.9f} {q[1]:.9f} {q[2]:.9f} {q[3]:.9f}\n")


def trajectory_errors(reference_tum: str, estimate_tum: str, correct_scale: bool,
                      rpe_delta: int = 10, max_time_difference: float = 0.01,
                      plot_path: str | None = None) -> dict:
    """evo's APE (translation, aligned) and RPE (translation and rotation over `rpe_delta`
    frames) of a TUM estimate against a TUM reference, associated by timestamp; with
    `plot_path`, the reference and the APE's aligned estimate drawn there."""
    with _evo_environment():
        from evo import main_ape, main_rpe
        from evo.core import metrics, sync
        from evo.tools import file_interface

        reference = file_interface.read_tum_trajectory_file(reference_tum)
        estimate = file_interface.read_tum_trajectory_file(estimate_tum)
        reference, estimate = sync.associate_trajectories(reference, estimate,
                                                          max_diff=max_time_difference)
        positions = reference.positions_xyz
        path_length = float(np.linalg.norm(np.diff(positions, axis=0), axis=1).sum())
        # evo's metrics may crop or align the trajectories they are given: each gets copies
        aligned = copy.deepcopy(estimate)  # the APE aligns it in place
        ape = main_ape.ape(copy.deepcopy(reference), aligned,
                           metrics.PoseRelation.translation_part, align=True,
                           correct_scale=correct_scale)
        kwargs = dict(delta=min(rpe_delta, max(1, reference.num_poses // 2)),
                      delta_unit=metrics.Unit.frames, all_pairs=False, align=True,
                      correct_scale=correct_scale)
        rpe_t = main_rpe.rpe(copy.deepcopy(reference), copy.deepcopy(estimate),
                             metrics.PoseRelation.translation_part, **kwargs)
        rpe_r = main_rpe.rpe(copy.deepcopy(reference), copy.deepcopy(estimate),
                             metrics.PoseRelation.rotation_angle_deg, **kwargs)
        alignment = "Sim(3)" if correct_scale else "SE(3)"
        if plot_path:
            plot_trajectory(plot_path, reference.positions_xyz, aligned.positions_xyz,
                            f"{os.path.basename(estimate_tum)}: ATE {ape.stats['rmse']:.3f} m "
                            f"after {alignment} alignment")
        return {"poses": int(reference.num_poses), "path_length_m": path_length,
                "ate_rmse": float(ape.stats["rmse"]), "ate_mean": float(ape.stats["mean"]),
                "ate_max": float(ape.stats["max"]),
                "ate_percent_of_path": 100.0 * float(ape.stats["rmse"]) / path_length
                if path_length > 0 else float("nan"),
                "rpe_translation_rmse": float(rpe_t.stats["rmse"]),
                "rpe_rotation_rmse_deg": float(rpe_r.stats["rmse"]),
                "alignment_scale": _scale_of(ape.np_arrays.get("alignment_transformation_sim3")),
                "alignment": alignment}


def plot_trajectory(path: str, reference: np.ndarray, estimate: np.ndarray, title: str) -> None:
    """Top view (x, y of the sequence's world frame, z up) of the ground truth and the aligned
    estimate, equal metric axes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 6))
    axis = figure.subplots()
    axis.plot(reference[:, 0], reference[:, 1], color="0.3", label="ground truth")
    axis.plot(estimate[:, 0], estimate[:, 1], color="tab:red", label="VO estimate (aligned)")
    axis.plot(*reference[0, :2], "o", color="0.3", label="start")
    axis.set_aspect("equal", adjustable="datalim")
    axis.set_xlabel("x (m)")
    axis.set_ylabel("y (m)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _scale_of(transform) -> float:
    """Scale factor of a 4x4 similarity (1 when absent)."""
    if transform is None:
        return 1.0
    return float(np.cbrt(abs(np.linalg.det(np.asarray(transform)[:3, :3]))))


@dataclass
class SequenceRun:
    name: str
    frames: int
    tracked: int
    losses: int
    reinitialisations: int
    keyframes: int
    metric: bool
    estimate_tum: str
    reference_tum: str


def sequence_features(frames, extract, cache_file: str | None = None) -> list:
    """(keypoints, descriptors) of every frame, read from `cache_file` when it holds at least
    these frames, otherwise extracted (and written there)."""
    if cache_file and os.path.isfile(cache_file):
        with np.load(cache_file) as cached:
            if int(cached["frames"]) >= len(frames):
                return [(cached[f"keypoints{i}"], cached[f"descriptors{i}"])
                        for i in range(len(frames))]
    features = [extract(frame.load_rgb())
                for frame in progress(frames, desc="features", unit="frame")]
    if cache_file:
        os.makedirs(os.path.dirname(os.path.abspath(cache_file)), exist_ok=True)
        arrays = {"frames": np.array(len(frames))}
        for i, (keypoints, descriptors) in enumerate(features):
            arrays[f"keypoints{i}"] = keypoints
            arrays[f"descriptors{i}"] = descriptors
        np.savez(cache_file, **arrays)
    return features


def run_vo_on_sequence(sequence_dir: str, extract, out_dir: str, use_depth: bool,
                       config: VOConfig | None = None, max_frames: int | None = None,
                       log=print, feature_cache: tuple[str, str] | None = None,
                       predict_depth=None) -> SequenceRun:
    """Feed every frame's features (and the recorded depth when `use_depth`, or the depth that
    `predict_depth(rgb)` returns on the frame's grid, as depth_node would) to the VO and write
    the estimate and the ground truth as TUM files. `feature_cache`: (folder, key of the
    feature extractor) to keep the features between runs."""
    sequence = read_sequence(sequence_dir)
    frames = sequence.frames[:max_frames] if max_frames else sequence.frames
    K = sequence.camera.K
    vo = MonocularVO(K, config)
    name = os.path.basename(os.path.normpath(sequence_dir))
    cache_file = (os.path.join(feature_cache[0], f"{name}-{feature_cache[1]}.npz")
                  if feature_cache else None)
    features = sequence_features(frames, extract, cache_file)
    stamps, poses, gt_stamps, gt_poses = [], [], [], []
    for frame, (keypoints, descriptors) in progress(zip(frames, features), total=len(frames),
                                                    desc=f"VO {name}", unit="frame"):
        if predict_depth is not None:
            depth = DepthImage(predict_depth(frame.load_rgb()), K)
        else:
            depth = DepthImage(frame.load_depth(), K) if use_depth and frame.depth else None
        result = vo.process(Features(keypoints, descriptors), depth)
        if np.isfinite(frame.position).all():
            gt_stamps.append(frame.stamp)
            gt_poses.append(frame.pose)
        if result.pose is not None:
            stamps.append(frame.stamp)
            poses.append(result.pose)
    estimate_tum = os.path.join(out_dir, f"{name}.vo.tum")
    reference_tum = os.path.join(out_dir, f"{name}.groundtruth.tum")
    write_tum(estimate_tum, stamps, poses)
    write_tum(reference_tum, gt_stamps, gt_poses)
    log(f"{name}: {len(frames)} frames, {len(poses)} poses, {vo.losses} lost frames, "
        f"{vo.reinitialisations} re-initialisations, {vo.keyframes} keyframes")
    return SequenceRun(name, len(frames), len(poses), vo.losses, vo.reinitialisations,
                       vo.keyframes, vo.metric, estimate_tum, reference_tum)


def evaluate_vo(sequence_dirs: list[str], extract, out_dir: str, use_depth: bool = False,
                config: VOConfig | None = None, max_frames: int | None = None,
                target_percent: float = 2.0, log=print,
                feature_cache: tuple[str, str] | None = None, predict_depth=None,
                alignment: str = "auto") -> dict:
    """`alignment`: auto (Sim(3) for up-to-scale runs, SE(3) for metric ones), sim3 or se3."""
    if alignment not in ("auto", "sim3", "se3"):
        raise ValueError(f"alignment must be auto, sim3 or se3, not {alignment!r}")
    rows = []
    for sequence_dir in sequence_dirs:
        run = run_vo_on_sequence(sequence_dir, extract, out_dir, use_depth, config, max_frames,
                                 log, feature_cache, predict_depth)
        if run.tracked < 3:
            errors = {"ate_rmse": float("inf"), "ate_percent_of_path": float("inf")}
        else:
            correct_scale = alignment == "sim3" or (alignment == "auto" and not run.metric)
            plot = os.path.join(out_dir, f"{run.name}.trajectory.png")
            errors = {**trajectory_errors(run.reference_tum, run.estimate_tum,
                                          correct_scale=correct_scale, plot_path=plot),
                      "trajectory_plot": plot}
        rows.append({**run.__dict__, **errors,
                     "passes": bool(errors["ate_percent_of_path"] <= target_percent)})
    return {"sequences": rows, "target_percent_of_path": target_percent,
            "all_pass": all(r["passes"] for r in rows)}


def format_vo_report(result: dict) -> str:
    columns = [("name", "sequence", 14), ("frames", "frames", 7), ("tracked", "poses", 6),
               ("reinitialisations", "reinit", 7), ("path_length_m", "path_m", 8),
               ("alignment", "align", 7), ("ate_rmse", "ATE_m", 8),
               ("ate_percent_of_path", "ATE_%path", 10), ("rpe_translation_rmse", "RPE_t", 8),
               ("rpe_rotation_rmse_deg", "RPE_deg", 8), ("passes", "<=target", 9)]
    lines = ["".join(f"{title:>{width}s}" for _, title, width in columns)]
    for row in result["sequences"]:
        cells = []
        for key, _, width in columns:
            value = row.get(key, "-")
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
            cells.append(f"{text:>{width}s}")
        lines.append("".join(cells))
    lines.append(f"target: ATE RMSE <= {result['target_percent_of_path']:g}% of path length; "
                 f"{'all sequences pass' if result['all_pass'] else 'NOT all sequences pass'}")
    return "\n".join(lines)
