"""``amanet video`` / ``Predictor.predict_video`` / :mod:`amanet.runtime.video`: frames, rate
and size kept, odd sizes, folders in and out, per-frame npz, streaming equals per-frame
prediction, an interrupted run leaves nothing that looks finished, and bad input is one line."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from amanet.assets import SYNTHETIC_IMAGE
from amanet.cli import main
from amanet.data.video_io import VideoSink, open_video

import av  # noqa: E402 - pinned in requirements.txt

FRAMES = 6


def _frames(h, w):
    base = np.asarray(Image.open(SYNTHETIC_IMAGE).convert("RGB"))[:, :, ::-1]
    out = []
    for i in range(FRAMES):  # the synthetic people, panning a few pixels per frame
        shifted = np.roll(base, 4 * i, axis=1)
        out.append(np.ascontiguousarray(np.asarray(
            Image.fromarray(shifted[:, :, ::-1]).resize((w, h)))[:, :, ::-1]))
    return out


def _write_video(path, h=96, w=128, fps=12):
    sink = VideoSink(path, w, h, Fraction(fps))
    for f in _frames(h, w):
        sink.write(f)
    return sink.close()


def test_mp4_in_mp4_out_keeps_frames_rate_and_size(tmp_path, capsys):
    src = _write_video(tmp_path / "in.mp4")
    out = tmp_path / "out" / "dp.mp4"
    assert main(["video", str(src), str(out), "--quiet"]) == 0
    v = open_video(out)
    assert (v.width, v.height, v.fps) == (128, 96, Fraction(12))
    frames = list(v.frames())
    assert len(frames) == FRAMES and frames[0].shape == (96, 128, 3)
    assert not (tmp_path / "out" / "dp.mp4.partial").exists()
    # magicanimate: people drawn on the VIRIDIS(0) canvas (dark purple) -> other colours too
    assert len(np.unique(frames[2].reshape(-1, 3) // 32, axis=0)) > 3


def _write_vfr(path, times_ms, h=96, w=128):
    """An H.264 file whose frames are shown at ``times_ms`` (irregular intervals)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for t, f in zip(times_ms, _frames(h, w)):
            frame = av.VideoFrame.from_ndarray(f, format="bgr24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def _times(path):
    with av.open(str(path)) as c:
        return [f.time for f in c.decode(c.streams.video[0])]


def test_variable_frame_rate_keeps_every_frames_time(tmp_path, capsys):
    times_ms = [0, 40, 80, 200, 240, 500]
    src = _write_vfr(tmp_path / "vfr.mp4", times_ms)
    assert [round(t * 1000) for t in _times(src)] == times_ms
    assert [t for t, _ in open_video(src).timed_frames()] == [Fraction(t, 1000)
                                                               for t in times_ms]
    out = tmp_path / "out.mp4"
    assert main(["video", str(src), str(out), "--vis", "parts"]) == 0
    assert [round(t * 1000) for t in _times(out)] == times_ms
    assert "variable frame rate" in capsys.readouterr().out
    # a constant rate stays one: index / fps, and no variable-rate note
    cfr = _write_video(tmp_path / "cfr.mp4", fps=12)
    assert main(["video", str(cfr), str(tmp_path / "cfr_out.mp4"), "--vis", "parts"]) == 0
    assert _times(tmp_path / "cfr_out.mp4") == pytest.approx([i / 12 for i in range(FRAMES)])
    assert "variable frame rate" not in capsys.readouterr().out


def test_sink_keeps_stamps_rising():
    sink = VideoSink.__new__(VideoSink)   # the stamping rule alone, without a file
    for_pts = []
    sink.time_base, sink.fps, sink._last_pts, sink.count = Fraction(1, 10), Fraction(10), None, 0
    for t in (Fraction(0), Fraction(1, 10), Fraction(1, 10), Fraction(1, 20)):
        for_pts.append(sink._stamp(t))
    assert for_pts == [0, 1, 2, 3]


def test_odd_size_is_kept_exactly(tmp_path):
    src = tmp_path / "frames"
    src.mkdir()
    for i, f in enumerate(_frames(97, 131)):
        Image.fromarray(f[:, :, ::-1]).save(src / f"{i:03d}.png")
    out = tmp_path / "odd.mp4"
    assert main(["video", str(src), str(out), "--quiet", "--vis", "dp_segm"]) == 0
    v = open_video(out)
    assert (v.width, v.height) == (131, 97) and len(list(v.frames())) == FRAMES


def test_folder_out_several_pictures_and_npz(tmp_path):
    src = _write_video(tmp_path / "in.mkv")
    out = tmp_path / "frames"
    npz = tmp_path / "raw"
    assert main(["video", str(src), str(out), "--quiet", "--vis", "magicanimate,parts",
                 "--save-npz", str(npz)]) == 0
    for style in ("magicanimate", "parts"):
        files = sorted((tmp_path / f"frames_{style}").glob("frame_*.png"))
        assert len(files) == FRAMES
    parts = np.asarray(Image.open(tmp_path / "frames_parts" / "frame_000002.png"))
    assert parts.max() <= 24 and parts.max() > 0
    raw = sorted(npz.glob("frame_*.npz"))
    assert len(raw) == FRAMES
    z = np.load(raw[2])
    assert {"boxes", "scores", "classes", "chart_boxes"} <= set(z.files)
    assert any(f.startswith("densepose_") for f in z.files)


def test_predict_video_streams_the_same_results_as_single_frames(tmp_path):
    from amanet.assets import DEMO_MODEL
    from amanet.runtime import Predictor

    src = tmp_path / "frames"
    src.mkdir()
    frames = _frames(96, 128)
    for i, f in enumerate(frames):
        Image.fromarray(f[:, :, ::-1]).save(src / f"{i:03d}.png")
    pred = Predictor(None, weights=str(DEMO_MODEL))
    streamed = list(pred.predict_video(src))
    assert [i for i, _ in streamed] == list(range(FRAMES))
    for (i, p), f in zip(streamed, frames):
        single = pred(f)
        np.testing.assert_array_equal(p.boxes, single.boxes)
        np.testing.assert_array_equal(p.iuv, single.iuv)
    assert sum(len(p) for _, p in streamed) > 0, "the demo model finds the synthetic people"


def test_batched_frames_give_the_per_frame_results(tmp_path, capsys):
    """batch_size B: the model frames go through the model B at a time, the results (and key
    frames' fills, track ids) as one frame at a time; the summary says it; a bad batch size is
    one line before any work."""
    from amanet.assets import DEMO_MODEL
    from amanet.runtime import Predictor

    src = _write_video(tmp_path / "in.mp4")
    pred = Predictor(None, weights=str(DEMO_MODEL))
    frames = list(open_video(src).frames())
    batched = pred.predict_many(frames, batch_size=4)
    assert len(batched) == FRAMES
    for f, b in zip(frames, batched, strict=True):
        one = pred(f)
        np.testing.assert_allclose(b.boxes, one.boxes, atol=1e-3)
        assert (b.iuv == one.iuv).mean() > 0.999
    for every, size in ((1, 4), (2, 2), (2, 3)):
        one = list(pred.predict_video(src, keyframe_interval=every))
        many = list(pred.predict_video(src, keyframe_interval=every, batch_size=size))
        assert [i for i, _ in many] == list(range(FRAMES))
        for (_, a), (_, b) in zip(one, many, strict=True):
            np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
            np.testing.assert_array_equal(b.track_ids, a.track_ids)
            assert (b.iuv == a.iuv).mean() > 0.999
    assert main(["video", str(src), str(tmp_path / "out.mp4"), "--batch", "3",
                 "--keyframe-interval", "2", "-q"]) == 0
    assert open_video(tmp_path / "out.mp4").num_frames == FRAMES
    capsys.readouterr()
    assert main(["video", str(src), str(tmp_path / "bad.mp4"), "--batch", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--batch must be a whole number >= 1" in err and "\n" not in err
    assert not list(tmp_path.glob("bad*"))
    with pytest.raises(ValueError, match="batch size must be"):
        list(pred.predict_video(src, batch_size=1.5))


@pytest.mark.parametrize("overlap", [False, True])
def test_failure_mid_video_leaves_nothing_that_looks_finished(tmp_path, overlap):
    from amanet.assets import DEMO_MODEL
    from amanet.runtime import Predictor
    from amanet.runtime.video import run_video
    from amanet.viz import render

    src = _write_video(tmp_path / "in.mp4")
    pred = Predictor(None, weights=str(DEMO_MODEL))
    calls = []

    def draw(frame, p, style):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return render(frame, p, style)

    out = tmp_path / "o.mp4"
    with pytest.raises(KeyboardInterrupt):
        run_video(pred.predict, src, out, draw=draw, npz_dir=tmp_path / "npz", progress=False,
                  overlap=overlap)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_overlapped_and_serial_runs_write_the_same(tmp_path):
    """The threaded pipeline and the one-after-another one: the same frames, pictures and raw
    results, in order."""
    from amanet.assets import DEMO_MODEL
    from amanet.runtime import Predictor
    from amanet.runtime.video import run_video

    src = _write_video(tmp_path / "in.mp4")
    pred = Predictor(None, weights=str(DEMO_MODEL))
    runs = {}
    for overlap in (False, True):
        out = tmp_path / f"out_{overlap}"
        summary = run_video(pred.predict, src, out, ["parts"], npz_dir=tmp_path / f"npz_{overlap}",
                            progress=False, overlap=overlap)
        assert summary["overlapped"] is overlap and summary["frames"] == FRAMES
        runs[overlap] = ([np.asarray(Image.open(f)) for f in sorted(out.glob("*.png"))],
                         [np.load(f)["boxes"] for f in sorted((tmp_path / f"npz_{overlap}")
                                                               .glob("*.npz"))])
    for a, b in zip(runs[False][0] + runs[False][1], runs[True][0] + runs[True][1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(runs[False][0]) == FRAMES


def test_stages_overlap_only_into_spare_cores(monkeypatch):
    import os

    import torch

    from amanet.runtime.video import should_overlap

    assert should_overlap("cuda")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert not should_overlap()          # 2 cores, 2 inference threads: one after another
        torch.set_num_threads(1)
        assert should_overlap()              # a core to spare
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("case", ["missing", "empty", "garbage", "truncated", "no_video",
                                  "unwritable", "bad_vis"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    src = tmp_path / "in.mp4"
    out = tmp_path / "out.mp4"
    args = []
    if case == "empty":
        src.write_bytes(b"")
    elif case == "garbage":
        src.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    elif case == "truncated":
        full = _write_video(tmp_path / "full.mp4").read_bytes()
        (tmp_path / "full.mp4").unlink()
        src.write_bytes(full[:len(full) // 2])
    elif case == "no_video":
        with av.open(str(src), "w") as c:  # an audio-only file
            s = c.add_stream("aac", rate=8000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate = 8000
            for p in s.encode(frame):
                c.mux(p)
            for p in s.encode():
                c.mux(p)
    elif case == "unwritable":
        _write_video(src)
        (tmp_path / "a_file").write_text("x")
        out = tmp_path / "a_file" / "out.mp4"
    elif case == "bad_vis":
        _write_video(src)
        args = ["--vis", "dp_contour"]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["video", str(src), str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [e for e in err if not e.startswith("note:")]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing written"


def test_rotation_flag_is_honoured(tmp_path):
    """A phone video stored landscape with a 'rotate 90' display matrix comes out upright
    (portrait): the matrix is written into the MP4's tkhd box as FFmpeg writes it."""
    import struct

    h, w = 32, 64
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:8, :8] = 255                       # a white block at the stored top-left
    stored = tmp_path / "stored.mp4"
    sink = VideoSink(stored, w, h, Fraction(10))
    for _ in range(3):
        sink.write(frame)
    sink.close()
    data = bytearray(stored.read_bytes())
    pos = data.find(b"tkhd")
    assert pos > 0 and struct.unpack(">9i", bytes(data[pos + 44:pos + 80]))[0] == 0x10000
    data[pos + 44:pos + 80] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0,
                                          0x40000000)       # display: 90 degrees clockwise
    rotated = tmp_path / "rotated.mp4"
    rotated.write_bytes(bytes(data))
    v = open_video(rotated)
    assert (v.width, v.height) == (h, w)
    first = next(v.frames())
    assert first.shape == (w, h, 3)
    assert first[:8, -8:].mean() > 200 and first[-8:, :8].mean() < 50  # now at the top-right
    out = tmp_path / "out.mp4"
    assert main(["video", str(rotated), str(out), "--quiet", "--vis", "parts"]) == 0
    o = open_video(out)
    assert (o.width, o.height) == (h, w) and len(list(o.frames())) == 3


def test_a_stopped_consumer_shuts_every_stage_down():
    """Stages chained through bounded queues (decode -> infer+draw) all end when the consumer
    stops early: no thread left polling, no file left open."""
    import threading
    import time

    from amanet.runtime.video import _threaded

    before = set(threading.enumerate())
    chained = _threaded(_threaded(iter(range(10_000)), 2, "t-inner"), 2, "t-outer")
    assert next(chained) == 0
    chained.close()
    deadline = time.time() + 5
    while time.time() < deadline and set(threading.enumerate()) - before:
        time.sleep(0.05)
    assert not [t.name for t in set(threading.enumerate()) - before]
