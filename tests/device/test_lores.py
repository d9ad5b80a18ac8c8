"""Lores conversion: picamera2's YUV420 arrays at any stride, and its RGB/BGR formats, to the model's RGB."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt
import pytest

from bodycam.device.errors import HardwareError
from bodycam.device.hw.picamera_adapter import fit_to_model, isp_lores_size, to_rgb, yuv420_to_rgb

W, H = 160, 96


def picture(w: int = W, h: int = H) -> npt.NDArray[np.uint8]:
    """Smooth random content (chroma subsampling stays small) with some edges."""
    small = np.random.default_rng(7).integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(small.repeat(8, axis=0).repeat(8, axis=1))


def padded_i420(rgb: npt.NDArray[np.uint8], stride: int) -> npt.NDArray[np.uint8]:
    """libswscale's BT.709 limited-range I420, laid out as picamera2's make_array returns it."""
    h, w = rgb.shape[:2]
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv420p", dst_colorspace="ITU709", dst_color_range=1)
    planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes]
    buf = np.full(stride * h * 3 // 2, 0xEE, np.uint8)  # padding is garbage
    buf[: h * stride].reshape(h, stride)[:, :w] = planes[0]
    half, cs = stride // 2, (h // 2) * (stride // 2)
    buf[h * stride: h * stride + cs].reshape(h // 2, half)[:, : w // 2] = planes[1]
    buf[h * stride + cs: h * stride + 2 * cs].reshape(h // 2, half)[:, : w // 2] = planes[2]
    return buf.reshape(h * 3 // 2, stride)


@pytest.mark.parametrize("stride", [160, 192, 256, 320])
def test_yuv420_at_any_stride(stride: int) -> None:
    rgb = picture()
    out = yuv420_to_rgb(padded_i420(rgb, stride), W, H)
    err = np.abs(out.astype(int) - rgb.astype(int))
    assert out.shape == (H, W, 3)
    # exact up to rounding away from edges (libswscale filters chroma across the block edges)
    assert np.median(err) <= 1 and err.mean() < 6, (err.mean(), err.max())


def test_a_stride_mistake_would_show() -> None:
    """The check above can fail: reading a 192-stride buffer as if stride were the width garbles it."""
    rgb = picture()
    buf = padded_i420(rgb, 192)
    wrong = yuv420_to_rgb(np.ascontiguousarray(buf.reshape(-1)[: W * H * 3 // 2].reshape(H * 3 // 2, W)), W, H)
    assert np.abs(wrong.astype(int) - rgb.astype(int)).mean() > 20


def test_yvu420_swaps_the_chroma_planes() -> None:
    rgb = picture()
    buf = padded_i420(rgb, 192)
    h, s = H, 192
    cs = (h // 2) * (s // 2)
    flat = buf.reshape(-1).copy()
    u = flat[h * s: h * s + cs].copy()
    flat[h * s: h * s + cs] = flat[h * s + cs: h * s + 2 * cs]
    flat[h * s + cs: h * s + 2 * cs] = u
    out = to_rgb(flat.reshape(buf.shape), "YVU420", W, H)
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 6


@pytest.mark.parametrize(("fmt", "order"), [("BGR888", (0, 1, 2)), ("RGB888", (2, 1, 0)),
                                            ("XBGR8888", (0, 1, 2)), ("XRGB8888", (2, 1, 0))])
def test_rgb_formats(fmt: str, order: tuple[int, int, int]) -> None:
    rgb = picture()
    planes = [rgb[..., i] for i in order] + ([np.full((H, W), 255, np.uint8)] if fmt.startswith("X") else [])
    arr = np.stack(planes, -1)  # picamera2: "BGR888" holds R,G,B per pixel, "RGB888" B,G,R
    assert np.array_equal(to_rgb(arr, fmt, W, H), rgb)


def test_bad_shapes_and_formats_are_hardware_errors() -> None:
    with pytest.raises(HardwareError, match="does not hold"):
        yuv420_to_rgb(np.zeros((100, 192), np.uint8), W, H)
    with pytest.raises(HardwareError, match="unsupported lores format"):
        to_rgb(np.zeros((H, W, 2), np.uint8), "YUYV", W, H)


def test_isp_sizes_and_the_model_input_cut_from_them() -> None:
    assert isp_lores_size((160, 90), "YUV420", (1920, 1080)) == (160, 92)
    assert isp_lores_size((160, 96), "YUV420", (1920, 1080)) == (160, 96)
    assert isp_lores_size((161, 90), "BGR888", (1920, 1080)) == (162, 90)
    rgb = picture(160, 96)
    cut = fit_to_model(rgb, (160, 90))
    assert cut.shape == (90, 160, 3) and np.array_equal(cut, rgb[3:93])
    small = fit_to_model(rgb, (320, 192))  # libcamera gave less than asked: resampled
    assert small.shape == (192, 320, 3) and np.array_equal(small[::2, ::2], rgb)
