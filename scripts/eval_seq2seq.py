"""Score decoding outputs; `python scripts/eval_seq2seq.py --help` (or `diffuseq-eval --help`)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffuseq.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
