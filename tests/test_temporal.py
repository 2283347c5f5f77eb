"""Moving synthetic people (amanet.data.synthetic_video), the label-flip metric, the temporal
benchmark, and `amanet video --smooth` / Predictor.predict_video(smooth=True)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from amanet.benchmarks.temporal import label_flips
from amanet.cli import main
from amanet.data.synthetic_video import blend_pose, render_clip, write_clip


def test_label_flips_by_hand():
    truth = np.array([[[1, 1, 0]], [[1, 2, 0]], [[1, 2, 0]]], np.uint8)      # [T=3, 1, 3]
    pred = np.array([[[1, 1, 5]], [[3, 2, 0]], [[3, 4, 7]]], np.uint8)
    # stable body pixels: (t1, x0), (t2, x0), (t2, x1); flips among them: (t1, x0), (t2, x1)
    assert label_flips(pred, truth) == (2, 3)
    with pytest.raises(ValueError, match=r"\[T, H, W\]"):
        label_flips(pred[:, 0], truth[:, 0])


def test_blend_pose_ends_and_takes_the_short_way_round():
    from amanet.data.synthetic import Pose
    a, b = Pose(yaw=0.1), Pose(yaw=6.2)
    a.elbow = {"r": 0.0, "l": 1.0}
    b.elbow = {"r": 2.0, "l": 1.0}
    assert blend_pose(a, b, 0.0) == a
    mid = blend_pose(a, b, 0.5)
    assert mid.elbow == {"r": 1.0, "l": 1.0}
    assert abs(mid.yaw - (0.1 + 0.5 * (6.2 - 2 * np.pi - 0.1))) < 1e-12   # through 0, not pi
    assert a.elbow == {"r": 0.0, "l": 1.0}                                 # inputs untouched


def test_clips_are_deterministic_and_people_move_smoothly():
    one = list(render_clip(3, 1, 12, (96, 96)))
    two = list(render_clip(3, 1, 12, (96, 96)))
    other = next(render_clip(3, 2, 1, (96, 96)))
    for x, y in zip(one, two, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.I, y.I)
    assert not np.array_equal(one[0].image, other.image)
    fg = [s.person >= 0 for s in one]
    assert all(m.any() for m in fg)
    for a, b in zip(fg, fg[1:]):       # consecutive frames overlap mostly, but not entirely
        iou = (a & b).sum() / (a | b).sum()
        assert 0.3 < iou < 1.0, iou
    with pytest.raises(ValueError, match="num_frames"):
        next(render_clip(0, 0, 0))


def test_written_clip_matches_its_frames(tmp_path):
    from amanet.data.video_io import open_video

    files = write_clip(tmp_path / "c", 0, 0, 3, (64, 80))
    truth = np.load(files.truth)
    assert truth["I"].shape == (3, 64, 80) and truth["person"].shape == (3, 64, 80)
    gt = json.loads(files.annotations.read_text())
    assert [im["id"] for im in gt["images"]] == [1, 2, 3]
    assert gt["info"]["body_model"]
    frames = list(open_video(files.frames).frames())
    samples = list(render_clip(0, 0, 3, (64, 80)))
    for f, s in zip(frames, samples, strict=True):
        np.testing.assert_array_equal(f, s.image)         # lossless frames
    np.testing.assert_array_equal(truth["I"][1], samples[1].I)


def test_smoothing_has_fewer_flips_than_per_frame_on_moving_people(tmp_path):
    """The demo model on one moving-people clip (the benchmark's own code, small): per-frame
    results and smoothed ones; smoothing must lower the flip rate (README has the full
    numbers from bench/temporal.py)."""
    from amanet.assets import DEMO_MODEL
    from amanet.benchmarks.temporal import run_temporal

    res = run_temporal(str(DEMO_MODEL), tmp_path, clips=1, frames=10, image_size=(160, 160),
                       cases={"smoothed": {}, "off": {"box_alpha": 1.0, "dense_alpha": 1.0,
                                                      "hysteresis": 0.0}},
                       progress=False)
    base, smooth, off = res
    assert base.stable > 1000 and base.flips > 0
    assert smooth.stable == base.stable
    assert smooth.flips < base.flips
    assert off.flips == base.flips                     # all smoothing off = per-frame labels
    for r in res:
        assert set(r.ap) == {"GPS AP", "GPSm AP", "IoU AP", "box AP"}
        assert all(0.0 <= v <= 1.0 for v in r.ap.values())
    assert off.ap == pytest.approx(base.ap, abs=1e-9)
    assert smooth.tracks >= 1


def test_temporal_bench_runs_an_int8_export_with_key_frames(tmp_path):
    """bench/temporal.py --backend openvino --precision int8: the same cases over the demo
    model's int8 export (calibrated on synthetic training images)."""
    from amanet.assets import DEMO_MODEL
    from amanet.benchmarks.temporal import run_temporal

    res = run_temporal(str(DEMO_MODEL), tmp_path, clips=1, frames=5, image_size=(128, 128),
                       cases={"key frames every 2": {"smooth": False, "keyframe_interval": 2}},
                       progress=False, backend="openvino", precision="int8")
    assert (tmp_path / "model_int8.onnx").is_file()
    assert [r.case for r in res] == ["per-frame", "key frames every 2"]
    for r in res:
        assert r.stable > 0 and set(r.ap) == {"GPS AP", "GPSm AP", "IoU AP", "box AP"}


def test_video_smooth_writes_track_ids(tmp_path, capsys):
    files = write_clip(tmp_path / "clip", 0, 0, 12, (96, 96))   # two people walking
    npz = tmp_path / "raw"
    assert main(["video", str(files.frames), str(tmp_path / "out.mp4"), "--smooth",
                 "--save-npz", str(npz)]) == 0
    assert "people tracked (smoothed looking 4 frames ahead)" in capsys.readouterr().out
    ids = [np.load(f)["track_ids"] for f in sorted(npz.glob("frame_*.npz"))]
    assert len(ids) == 12 and all(i.dtype == np.int64 for i in ids)
    assert all(sorted(i) == [0, 1] for i in ids), ids      # the same two people throughout


def test_predict_video_smooth_equals_the_smoother_over_predict(tmp_path):
    from amanet.assets import DEMO_MODEL
    from amanet.data.video_io import open_video
    from amanet.runtime import Predictor

    from amanet.runtime.lookahead import LookaheadSmoother

    files = write_clip(tmp_path / "clip", 0, 1, 5, (96, 96))
    pred = Predictor(None, str(DEMO_MODEL))
    frames = list(open_video(files.frames).frames())
    # causal: lookahead 0 is the temporal smoother frame by frame
    streamed = [p for _, p in pred.predict_video(files.frames, smooth=True, dense_alpha=0.3,
                                                 lookahead=0)]
    sm = pred.temporal_smoother(dense_alpha=0.3)
    by_hand = [sm(pred(f), f) for f in frames]
    # the default looks ahead: every frame still comes out, in order
    looked = list(pred.predict_video(files.frames, smooth=True, lookahead=2))
    lk = LookaheadSmoother(pred.temporal_smoother(box_alpha=0.4, dense_alpha=0.4), 2)
    by_hand_ahead = [q for t, f in enumerate(frames) for q in lk.push(pred(f), f, t)]
    by_hand_ahead += lk.flush()
    assert [i for i, _ in looked] == [t for t, _ in by_hand_ahead] == list(range(5))
    for a, b in zip(streamed + [p for _, p in looked],
                    by_hand + [p for _, p in by_hand_ahead], strict=True):
        np.testing.assert_array_equal(a.track_ids, b.track_ids)
        np.testing.assert_array_equal(a.iuv, b.iuv)
    assert any((a.iuv != b.iuv).any() for (_, a), b in zip(looked, by_hand, strict=True))


def test_keyframes_run_the_model_on_every_kth_frame_only(tmp_path):
    """keyframe_interval 3 on 7 frames: the model sees frames 0, 3 and 6 (those come out as the
    per-frame predictions), the others are carried people with the same track ids."""
    from amanet.assets import DEMO_MODEL
    from amanet.data.video_io import open_video
    from amanet.runtime import Predictor
    from amanet.runtime.video import run_video

    files = write_clip(tmp_path / "clip", 0, 0, 7, (96, 96))     # two people, brisk
    pred = Predictor(None, str(DEMO_MODEL))
    seen = []

    def counting(frame):
        seen.append(frame)
        return pred(frame)

    summary = run_video(counting, files.frames, tmp_path / "out", ["parts"], progress=False,
                        npz_dir=tmp_path / "raw", keyframe_interval=3,
                        smoother=pred.video_smoother(keyframe_interval=3))
    frames = list(open_video(files.frames).frames())
    assert len(seen) == 3 and summary["predicted_frames"] == 3 and summary["frames"] == 7
    for s, t in zip(seen, (0, 3, 6), strict=True):
        np.testing.assert_array_equal(s, frames[t])
    streamed = [p for _, p in pred.predict_video(files.frames, keyframe_interval=3)]
    assert len(streamed) == 7
    for t in (0, 3, 6):
        assert (streamed[t].iuv[0] == pred(frames[t]).iuv[0]).mean() > 0.9999
    ids = [sorted(p.track_ids) for p in streamed]
    assert all(ids[t] == ids[t - t % 3] for t in range(7)), ids     # carried frames: same people
    assert set(ids[0]) & set(ids[3]) & set(ids[6]), ids             # someone followed throughout

    # 7 frames, every 4th: the last frame (6) is a key frame too, so 5 is filled from both sides
    seen.clear()
    summary = run_video(counting, files.frames, tmp_path / "out4", ["parts"], progress=False,
                        keyframe_interval=4, smoother=pred.video_smoother(keyframe_interval=4))
    assert summary["predicted_frames"] == 3 and summary["frames"] == 7
    for s, t in zip(seen, (0, 4, 6), strict=True):
        np.testing.assert_array_equal(s, frames[t])
    streamed = [p for _, p in pred.predict_video(files.frames, keyframe_interval=4)]
    assert len(streamed) == 7 and (streamed[6].iuv[0] == pred(frames[6]).iuv[0]).mean() > 0.9999
    written = sorted((tmp_path / "out").glob("*.png"))
    assert len(written) == 7 and len(list((tmp_path / "raw").glob("*.npz"))) == 7


def test_keyframe_settings_are_checked_before_any_work(tmp_path, capsys):
    from amanet.assets import DEMO_MODEL
    from amanet.runtime import Predictor
    from amanet.runtime.video import run_video

    with pytest.raises(ValueError, match="needs a KeyframeInterpolator"):
        run_video(lambda f: None, tmp_path / "missing.mp4", tmp_path / "o.mp4",
                  keyframe_interval=2)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="whole number >= 1"):
            run_video(lambda f: None, tmp_path / "missing.mp4", tmp_path / "o.mp4",
                      keyframe_interval=bad)
    pred = Predictor(None, str(DEMO_MODEL))
    with pytest.raises(ValueError, match="choose one"):
        pred.video_smoother(True, 2)
    with pytest.raises(ValueError, match="need smooth=True"):
        pred.video_smoother(dense_alpha=0.3)
    with pytest.raises(ValueError, match=r"\['lookahead'\] need smooth=True"):
        pred.video_smoother(lookahead=2)
    assert pred.video_smoother() is None
    default = pred.video_smoother(True)
    assert default.lookahead == 4 and default.smoother.dense_alpha == 0.4
    assert pred.video_smoother(True, lookahead=0, dense_alpha=0.3).dense_alpha == 0.3
    assert pred.video_smoother(keyframe_interval=2).tracker.dense_alpha == 1.0
    files = write_clip(tmp_path / "clip", 0, 0, 4, (96, 96))
    assert main(["video", str(files.frames), str(tmp_path / "kf.mp4"),
                 "--keyframe-interval", "2"]) == 0
    assert ("the model run on 3 key frames (every 2, and the last frame)"       # 0, 2 and 3
            in capsys.readouterr().out)


@pytest.mark.parametrize("args,msg", [(["--smooth", "--smooth-alpha", "0"], "dense_alpha"),
                                      (["--smooth-alpha", "0.5"], "needs --smooth"),
                                      (["--smooth-lookahead", "2"], "needs --smooth"),
                                      (["--smooth", "--smooth-lookahead", "-1"],
                                       "whole number >= 0"),
                                      (["--keyframe-interval", "0"], ">= 1"),
                                      (["--smooth", "--keyframe-interval", "2"],
                                       "do not go together")])
def test_bad_smoothing_options_are_one_line(tmp_path, capsys, args, msg):
    files = write_clip(tmp_path / "clip", 0, 0, 1, (64, 64))
    out = tmp_path / "out.mp4"
    assert main(["video", str(files.frames), str(out), "--quiet", *args]) == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith("note:")]
    assert len(err) == 1 and msg in err[0], err
    assert not out.exists()


def test_bench_quick_run_writes_table_and_json(tmp_path, monkeypatch):
    import runpy
    import sys
    from pathlib import Path

    from amanet.benchmarks.temporal import CASES

    bench = Path(__file__).resolve().parents[1] / "bench" / "temporal.py"
    monkeypatch.setattr(sys, "argv", ["temporal.py", "--quick", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(bench), run_name="__main__")
    assert done.value.code == 0
    doc = json.loads((tmp_path / "temporal.json").read_text())
    rows = doc["runs"][0]["results"]
    assert [r["case"] for r in rows] == ["per-frame", *CASES]
    assert all(r["stable"] == rows[0]["stable"] for r in rows)
    assert all(r["flip_rate"] == pytest.approx(r["flips"] / max(r["stable"], 1)) for r in rows)
    table = (tmp_path / "temporal.md").read_text()
    assert table.startswith("CPU: ") and "| per-frame |" in table and "| no optical flow |" in table
    assert (tmp_path / "temporal_4.png").stat().st_size > 1000
