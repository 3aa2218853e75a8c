"""DiffuSeq and DiffuSeq-v2: sequence-to-sequence text generation with diffusion models.

    from diffuseq import DiffuSeq
    DiffuSeq.from_pretrained("diffusion_models/my_run").generate(["how do i learn python?"])
"""


def __getattr__(name):  # the pipeline imports torch: only when it is asked for
    if name in ("DiffuSeq", "Decoding"):
        from . import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module 'diffuseq' has no attribute {name!r}")
