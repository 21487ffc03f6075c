"""Helpers behind the classifier trust-audit notebooks.

One module per concern: ``data`` (read folders of images), ``scenes`` (the embedded scene
generator), ``models`` (build/load/save models), ``train`` (fine-tuning with per-epoch
logging), ``evolution`` (confusion-evolution statistics), ``plots`` (figures), ``paths``
(where caches and figures live) and ``runs`` (the cached fine-tuned model a notebook needs).
Every image tensor a helper takes or returns is float in [0, 1], NCHW.
"""
