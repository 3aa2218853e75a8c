"""Choose a checkpoint's decoding settings on validation data. `python tune_decode.py --help`."""
import sys

from diffuseq.tuning import main

if __name__ == "__main__":
    sys.exit(main())
