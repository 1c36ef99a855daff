"""The small LFW-layout verification set, as `mfn-deploy sample-pairs` writes it."""

from mfn_deploy.face.sample_pairs import identities, variants, write_lfw_layout

__all__ = ["identities", "variants", "write_lfw_layout"]
