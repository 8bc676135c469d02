"""Box geometry. COCO boxes are ``[x, y, w, h]`` in pixels (``bbox_xywh``); the stages pass
boxes on as ``[x0, y0, x1, y1]`` normalised to [0, 1] (``box_xyxy_norm``), which is what
GLIGEN takes. All functions take arrays of shape (N, 4) and sizes broadcastable to (N,)."""

import numpy as np


def xywh_to_xyxy(bbox_xywh) -> np.ndarray:
    """``[x, y, w, h]`` to ``[x0, y0, x1, y1]`` in the same units."""
    b = np.asarray(bbox_xywh, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def xyxy_to_xywh(box_xyxy) -> np.ndarray:
    """``[x0, y0, x1, y1]`` to ``[x, y, w, h]`` in the same units."""
    b = np.asarray(box_xyxy, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def clip_xywh(bbox_xywh_pixels, width, height) -> np.ndarray:
    """Clip pixel ``[x, y, w, h]`` boxes to the image; a box outside it gets zero size."""
    xyxy = xywh_to_xyxy(bbox_xywh_pixels)
    limits = _sizes(width, height, len(xyxy))
    xyxy = np.clip(xyxy, 0.0, limits)
    return xyxy_to_xywh(xyxy)


def xywh_pixels_to_xyxy_norm(bbox_xywh_pixels, width, height) -> np.ndarray:
    """COCO pixel boxes to ``[x0, y0, x1, y1]`` normalised by the image size and clipped to [0, 1]."""
    xyxy = xywh_to_xyxy(bbox_xywh_pixels)
    return np.clip(xyxy / _sizes(width, height, len(xyxy)), 0.0, 1.0)


def xyxy_norm_to_xywh_pixels(box_xyxy_norm, width, height) -> np.ndarray:
    """Normalised ``[x0, y0, x1, y1]`` boxes to COCO pixel ``[x, y, w, h]``."""
    xyxy = np.asarray(box_xyxy_norm, dtype=np.float64).reshape(-1, 4)
    return xyxy_to_xywh(xyxy * _sizes(width, height, len(xyxy)))


def _sizes(width, height, n) -> np.ndarray:
    w = np.broadcast_to(np.asarray(width, dtype=np.float64), (n,))
    h = np.broadcast_to(np.asarray(height, dtype=np.float64), (n,))
    return np.stack([w, h, w, h], axis=1)
