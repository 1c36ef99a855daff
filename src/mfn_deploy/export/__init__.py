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
