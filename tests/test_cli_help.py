"""Every command's --help explains every argument, and states each default once."""
import pytest

from diffuseq.config import HelpFormatter, train_parser
from diffuseq.decode_cli import decode_parser
from diffuseq.tuning import tune_parser


@pytest.mark.parametrize("parser", [train_parser(), decode_parser(True), decode_parser(False), tune_parser()],
                         ids=["train", "decode_solver", "decode", "tune"])
def test_every_argument_is_explained_once(parser):
    fmt = HelpFormatter(parser.prog)
    for a in parser._actions:
        if not a.option_strings or a.dest == "help":
            continue
        assert a.help and a.help.strip(), f"{a.dest} has no help text"
        shown = fmt._get_help_string(a).replace("%(default)s", str(a.default)).replace("%%", "%")
        assert shown.lower().count("default") <= 1, (a.dest, shown)
        assert "(default: None)" not in shown, a.dest
        if a.required:
            assert "default" not in shown.lower(), a.dest
    assert "(default: None)" not in parser.format_help()


def test_defaults_are_still_shown_where_they_say_something():
    text = " ".join(train_parser().format_help().split())
    assert "peak learning rate of AdamW (default: 0.002)" in text  # the default recipe's
    text = " ".join(train_parser("original-v1").format_help().split())
    assert "peak learning rate of AdamW (default: 0.0001)" in text  # the original's
    assert "(default: the one the model was trained on) (default" not in " ".join(
        decode_parser(True).format_help().split())
