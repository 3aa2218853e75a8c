"""diffuseq/config.py: the README documents every argument of train.py, with its default."""
import re
from pathlib import Path

from diffuseq.config import train_parser

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\| `--(\w+)`(?: \([^)]*\))? \| ([^|]*) \|", re.M)


def test_readme_table_lists_every_train_argument_with_its_default():
    documented = {name: default.strip() for name, default in ROW.findall(README.read_text())}
    parser = train_parser()
    actions = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert sorted(documented) == sorted(a.dest for a in actions)
    for a in actions:
        if isinstance(a.default, bool) and a.nargs == 0:  # a switch
            expected = "off"
        else:
            expected = str(a.default)
        assert documented[a.dest] in (expected, str(a.default)), (a.dest, documented[a.dest], a.default)
