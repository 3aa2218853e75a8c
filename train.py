"""Train a DiffuSeq / DiffuSeq-v2 model. `python train.py --help` lists every argument."""
import sys

from diffuseq.config import parse_train_args
from diffuseq.trainer import main

if __name__ == "__main__":
    sys.exit(main(parse_train_args()))
