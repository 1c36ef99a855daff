"""mfn-deploy: a train-to-phone toolchain for MobileFaceNet."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mfn-deploy")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
