"""Reading JSON-lines files: one object per line, named string fields, and every bad line an
error "path:LINE: problem" (or, when asked, skipped and counted). Training pairs, decoding inputs
and decoding outputs are all read through here."""
import json
import os


class DataError(ValueError):
    """A data file that cannot be read, or a bad line of one (the message names both)."""


def check_file(path):
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise DataError(f"data folder {folder} does not exist")
    if not os.path.isfile(path):
        splits = sorted(f[:-6] for f in os.listdir(folder) if f.endswith(".jsonl"))
        has = ", ".join(splits) if splits else "no .jsonl files"
        raise DataError(f"{path}: no such file (the folder {folder} has: {has})")


def decode_line(raw, lineno):
    """bytes of one line -> text (a byte-order mark on the first line dropped); raises ValueError
    with the problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"invalid UTF-8 (byte {e.start} of the line)") from None
    return text.lstrip("\ufeff") if lineno == 1 else text


def parse_line(raw, lineno, required, optional=(), nonempty=()):
    """bytes of one jsonl line -> {key: str, or None for an optional key that is absent or null};
    raises ValueError with the problem."""
    try:
        obj = json.loads(decode_line(raw, lineno))
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg}, column {e.colno})") from None
    except RecursionError:
        raise ValueError("not valid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        keys = " and ".join(f'"{k}"' for k in required)
        raise ValueError(f"expected a JSON object with {keys}, got {type(obj).__name__}")
    out = {}
    for key in (*required, *optional):
        value = obj.get(key)
        if key not in obj and key in required:
            raise ValueError(f'missing "{key}"')
        if value is None and key not in required:
            out[key] = None
            continue
        if not isinstance(value, str):
            raise ValueError(f'"{key}" must be a string, got {type(value).__name__}')
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:  # "\ud800" is valid JSON but no text
            code = ord(value[e.start])
            raise ValueError(f'"{key}" holds a lone surrogate (\\u{code:04x}), which is not text') from None
        if key in nonempty and not value.strip():
            raise ValueError(f'"{key}" is empty')
        out[key] = value
    return out


class JsonlReader:
    """Iterate (line number, record) over a jsonl file, each record {key: str or None} (see
    parse_line); a bad line raises `error` "path:LINE: problem", or with skip_bad_lines is
    skipped and counted (`n_skipped`; `n_read` the records read). Blank lines are ignored. Each
    iteration re-reads the file."""

    def __init__(self, path, required, optional=(), nonempty=(), skip_bad_lines=False, error=DataError):
        check_file(path)
        self.path, self.skip_bad_lines, self.error = path, skip_bad_lines, error
        self.fields = (tuple(required), tuple(optional), tuple(nonempty))
        self.n_read = self.n_skipped = 0

    def __iter__(self):
        self.n_read = self.n_skipped = 0
        with open(self.path, "rb") as f:  # binary, so bad UTF-8 is caught with its line number
            for lineno, raw in enumerate(f, 1):
                raw = raw.strip()
                if not raw:
                    continue
                try:
                    record = parse_line(raw, lineno, *self.fields)
                except ValueError as e:
                    if not self.skip_bad_lines:
                        raise self.error(f"{self.path}:{lineno}: {e}") from None
                    self.n_skipped += 1
                    continue
                self.n_read += 1
                yield lineno, record
