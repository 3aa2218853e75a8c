"""Console scripts installed with the package (`pip install .`):

    diffuseq-train          = python train.py
    diffuseq-decode         = python run_decode.py          (ancestral sampling)
    diffuseq-decode-solver  = python run_decode_solver.py   (DPM-Solver++)
    diffuseq-tune           = python tune_decode.py         (decoding settings chosen on validation)
    diffuseq-eval           = python scripts/eval_seq2seq.py
    diffuseq-data           = python -m diffuseq.data.bible (the built-in Bible pairs)
    diffuseq-checkpoint     = python -m diffuseq.checkpoint (convert: older checkpoints to safetensors;
                                                            import-original: the original code's runs as ours)
"""
import sys


def train():
    from .config import parse_train_args
    from .trainer import main
    sys.exit(main(parse_train_args()))


def decode():
    from .decode_cli import main
    sys.exit(main(solver=False))


def decode_solver():
    from .decode_cli import main
    sys.exit(main(solver=True))


def tune():
    from .tuning import main
    sys.exit(main())


def evaluate():
    from .evaluate import main
    sys.exit(main())


def data():
    from .data.bible import main
    sys.exit(main())


def checkpoint():
    from .checkpoint_cli import main
    sys.exit(main())
