"""Decode with ancestral sampling. `python run_decode.py --help` lists every argument."""
import sys

from diffuseq.decode_cli import main

if __name__ == "__main__":
    sys.exit(main(solver=False))
