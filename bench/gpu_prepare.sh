#!/usr/bin/env bash
# Run once on a CPU machine with the package index before a GPU check (bench/gpu_check.sh):
#   .whl/                     wheels (CPython 3.12, x86-64) of what the GPU image lacks: datasets,
#                             dill, multiprocess, nltk, rouge-score
#   datasets/bible_kjv_web/   the built-in data (the pythonbible packages stay here)
# Both are ignored by git; name them in the device call's carry list.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for pkg in "datasets==$(python -c 'import datasets; print(datasets.__version__)')" dill multiprocess nltk; do
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d .whl "$pkg"
done
python -m pip wheel -q --no-deps -w .whl rouge-score   # published as a source archive only
[ -f datasets/bible_kjv_web/test.jsonl ] || python -m diffuseq.data.bible --src kjv --trg web --out datasets/bible_kjv_web
du -sh .whl datasets/bible_kjv_web
