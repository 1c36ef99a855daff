"""The MTCNN cascade: image pyramid + P-Net, R-Net, O-Net, NMS, box regression.

Backend-agnostic: the three networks are plain callables from a float32 NCHW
array to the networks' single outputs (see ``mtcnn.py``), so torch, onnxruntime and
ncnn run exactly the same cascade. How pixels become those arrays travels with the
networks (``Nets.pixels``): a detector export's manifest record, or ``contract.MTCNN``
for the pretrained torch networks.
Boxes are (x1, y1, x2, y2) in pixels of the input image, x2/y2 exclusive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from mfn_deploy.contract import MTCNN, Pixels
from mfn_deploy.face.options import DetectorConfig

NetFn = Callable[[np.ndarray], np.ndarray]

PNET_CELL, PNET_STRIDE = 12, 2  # P-Net sees 12x12 windows every 2 pixels
RNET_SIZE, ONET_SIZE = 24, 48


@dataclass(frozen=True)
class Nets:
    pnet: NetFn
    rnet: NetFn
    onet: NetFn
    # What the networks were trained on; an export's manifest says so for its copies.
    pixels: Pixels = MTCNN


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose tip, mouth left, mouth right

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 5),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }


def _normalize(contract: Pixels, pixels: np.ndarray) -> np.ndarray:
    """HxWx3 (or NxHxWx3) pixels in the nets' channel order -> NCHW float32 in their range."""
    return contract.values(pixels[None] if pixels.ndim == 3 else pixels)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first.

    "min" divides the overlap by the smaller box (MTCNN's last stage), which also
    removes a small box nested inside a large one.
    """
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        overlap = inter / np.maximum(denom, 1e-12)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the networks' box offsets, which are fractions of the box size."""
    wh = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
    out = boxes.copy()
    out[:, 0:2] += reg[:, 0:2] * wh
    out[:, 2:4] += reg[:, 2:4] * wh
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre, as the next net expects."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out = boxes.copy()
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """size x size crops of each box (zero outside the image), and the integer boxes."""
    ih, iw = rgb.shape[:2]
    ib = np.floor(boxes[:, :4]).astype(np.int64)
    ib[:, 2:4] = np.maximum(ib[:, 2:4], ib[:, 0:2] + 1)
    out = np.empty((len(ib), size, size, 3), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(ib):
        patch = np.zeros((y2 - y1, x2 - x1, 3), np.float32)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, iw), min(y2, ih)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = rgb[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out, ib


def pyramid_scales(h: int, w: int, cfg: DetectorConfig) -> list[float]:
    scale = PNET_CELL / cfg.min_face_size
    side = min(h, w) * scale
    scales = []
    while side >= PNET_CELL:
        scales.append(scale)
        scale *= cfg.scale_factor
        side *= cfg.scale_factor
    return scales


def _stage1(rgb: np.ndarray, nets: Nets, cfg: DetectorConfig) -> np.ndarray:
    """Candidate boxes (x1, y1, x2, y2, score, 4 x reg) from every pyramid level."""
    h, w = rgb.shape[:2]
    found = []
    for s in pyramid_scales(h, w, cfg):
        hs, ws = int(h * s + 1), int(w * s + 1)
        level = cv2.resize(rgb, (ws, hs), interpolation=cv2.INTER_AREA)
        out = nets.pnet(_normalize(nets.pixels, level))[0]
        ys, xs = np.nonzero(out[1] >= cfg.thresholds[0])
        if not len(ys):
            continue
        cand = np.zeros((len(ys), 9), np.float32)
        cand[:, 0] = np.floor((PNET_STRIDE * xs + 1) / s)
        cand[:, 1] = np.floor((PNET_STRIDE * ys + 1) / s)
        cand[:, 2] = np.floor((PNET_STRIDE * xs + PNET_CELL) / s)
        cand[:, 3] = np.floor((PNET_STRIDE * ys + PNET_CELL) / s)
        cand[:, 4] = out[1, ys, xs]
        cand[:, 5:9] = out[2:6, ys, xs].T
        found.append(cand[nms(cand[:, :4], cand[:, 4], cfg.nms[0])])
    if not found:
        return np.zeros((0, 9), np.float32)
    cand = np.concatenate(found)
    return cand[nms(cand[:, :4], cand[:, 4], cfg.nms[1])]


def detect(image_bgr: np.ndarray, nets: Nets, cfg: DetectorConfig | None = None) -> list[Face]:
    """Faces in an 8-bit BGR image, best score first."""
    cfg = cfg or DetectorConfig()
    # "rgb": the nets' channel order, which is RGB for MTCNN's pretrained weights.
    rgb = np.ascontiguousarray(nets.pixels.ordered(image_bgr)).astype(np.float32)

    cand = _stage1(rgb, nets, cfg)
    if not len(cand):
        return []
    boxes = _square(_regress(cand[:, :4], cand[:, 5:9]))

    crops, _ = _crops(rgb, boxes, RNET_SIZE)
    out = nets.rnet(_normalize(nets.pixels, crops))
    keep = out[:, 1] > cfg.thresholds[1]
    boxes, scores, reg = boxes[keep], out[keep, 1], out[keep, 2:6]
    if not len(boxes):
        return []
    pick = nms(boxes, scores, cfg.nms[2])
    boxes = _square(_regress(boxes[pick], reg[pick]))

    crops, ib = _crops(rgb, boxes, ONET_SIZE)
    out = nets.onet(_normalize(nets.pixels, crops))
    keep = out[:, 1] > cfg.thresholds[2]
    ib, scores, reg, marks = ib[keep], out[keep, 1], out[keep, 2:6], out[keep, 6:16]
    if not len(ib):
        return []
    # Landmarks are fractions of the crop that O-Net actually saw.
    size = (ib[:, 2:4] - ib[:, 0:2]).astype(np.float32)
    xs = ib[:, 0:1] + size[:, 0:1] * marks[:, 0:5]
    ys = ib[:, 1:2] + size[:, 1:2] * marks[:, 5:10]
    landmarks = np.stack([xs, ys], 2)
    boxes = _regress(ib.astype(np.float32), reg)
    pick = nms(boxes, scores, cfg.nms[3], mode="min")
    return [Face(tuple(boxes[i]), float(scores[i]), landmarks[i]) for i in pick]


def draw(image_bgr: np.ndarray, faces: list[Face]) -> np.ndarray:
    """A copy of the image with boxes, scores and the five landmarks drawn."""
    out = image_bgr.copy()
    thick = max(1, round(max(out.shape[:2]) / 300))
    colors = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255), (0, 255, 255)]
    for f in faces:
        x1, y1, x2, y2 = (round(v) for v in f.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), thick)
        cv2.putText(
            out,
            f"{f.score:.3f}",
            (x1, max(y1 - 4, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick,
            (0, 255, 0),
            thick,
        )
        for (x, y), c in zip(f.landmarks, colors, strict=True):
            cv2.circle(out, (round(x), round(y)), 2 * thick, c, -1)
    return out
