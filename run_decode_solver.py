"""Decode with DPM-Solver++ in 10-20 steps. `python run_decode_solver.py --help` lists every argument."""
import sys

from diffuseq.decode_cli import main

if __name__ == "__main__":
    sys.exit(main(solver=True))
