"""Aligning unaligned face photos on the fly, with the face pipeline.

Detection (MTCNN, torch backend) finds the largest face; its five landmarks are
warped onto the standard template at the network's input size, exactly as
``mfn-deploy embed`` / ``evaluate`` align faces at inference time, so training
and deployment see the same crops.

The detector is loaded lazily and once per process: the aligner is built in the
main process and used in DataLoader worker processes.
"""

from __future__ import annotations

import os

import numpy as np

from mfn_deploy.errors import MfnError


class FaceAligner:
    """BGR photo -> aligned BGR crop of its largest face, or None when no face is found."""

    def __init__(self, size: tuple[int, int]) -> None:
        try:
            from mfn_deploy.face.align import align  # noqa: F401 - fail now, not in a worker
            from mfn_deploy.face.detect import detect  # noqa: F401
        except ImportError:
            raise MfnError(
                "aligning faces needs the face pipeline (mfn_deploy.face), which this "
                "installation lacks; give aligned crops at the network's input size instead"
            ) from None
        self.size = size
        self._nets = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_nets": None, "_pid": -1}

    def _detector(self):
        if self._pid != os.getpid():
            from mfn_deploy.runtime import detector_nets

            self._nets, self._pid = detector_nets("torch"), os.getpid()
        return self._nets

    def landmarks(self, image_bgr: np.ndarray) -> np.ndarray | None:
        from mfn_deploy.face.detect import detect

        faces = detect(image_bgr, self._detector())
        if not faces:
            return None
        largest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        return largest.landmarks

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray | None:
        from mfn_deploy.face.align import align

        points = self.landmarks(image_bgr)
        return None if points is None else align(image_bgr, points, self.size)
