"""Export: a face network's artifacts, stage by stage, each checked against its reference.

- ``stages``: every stage declared once (fold, onnx, simplify, ncnn, ncnn_fp16), the
  file names derived from them, and ``run_plan``, the one plan runner;
- ``plan``: the embedder's ``export`` and ``check`` (the detector's is in ``face``);
- ``fold``, ``to_onnx``, ``simplify``, ``to_ncnn``: the stages' work;
- ``backends``: runners for torch, onnxruntime and ncnn;
- ``parity``: judging the stages' outputs and blaming the first that breaks;
- ``manifest``: the manifest formats and their one reader and verifier;
- ``artifacts``: atomic, locked output directories and what ``--force`` may replace.

Nothing is imported here: ``import mfn_deploy.export.manifest`` stays cheap.
"""

# The ONNX opset every export uses unless told otherwise. Here, not in ``to_onnx`` (which
# loads torch), so the CLI can show it in --help without restating it.
DEFAULT_OPSET = 17
# Parity runs on this many seeded random inputs (and the seed) unless told otherwise:
# export, check and the TFLite import judge on the same set.
DEFAULT_RANDOM_INPUTS = 8
DEFAULT_PARITY_SEED = 0
# ``--int8-skip`` takes layer names or these groups (``int8.SKIP_GROUPS`` says which
# layers each is): every depthwise layer, the 3x3 ones, the global (GDConv) one.
INT8_SKIP_GROUPS = ("depthwise", "dw3x3", "gdconv")
