"""Red lines: no eval, exec, compile, pickle, joblib, unsafe YAML loading or DataFrame query/eval in the code, except
the uses listed (with their reason) below. The code is read token by token, so comments and docstrings that say
"never pickle" do not count, and a new use anywhere in agents/, workers/, agentsite/, bench/ or manage.py fails."""
import ast
import io
import tokenize
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR

SCANNED = ("agents", "workers", "agentsite", "bench", "manage.py")

#: Builtins that run text as code.
CODE_BUILTINS = {"eval", "exec", "compile", "__import__"}
#: Modules and functions that unpickle (run code from) their input.
PICKLE_NAMES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "shelve", "joblib", "read_pickle"}
#: YAML functions that construct arbitrary Python objects unless given a safe loader.
YAML_LOADS = {"load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all"}

#: (file, rule) -> (uses allowed, why each is safe). Keep it short: every entry is a promise someone checked.
ALLOWED = {
    ("bench/decisions.py", "getattr(builtins, 'eval')"): (
        1, "the eval() reference design the benchmark measures, on conditions the script itself generates"),
    ("agents/expressions/compiler.py", "compile("): (
        1, "compiles the allow-listed syntax tree the expression compiler built, never text"),
    ("agents/core/definitions.py", "yaml.load("): (1, "with _PlainLoader, a yaml.SafeLoader subclass"),
}


def _code_tokens(source: str) -> list[tokenize.TokenInfo]:
    """The tokens that are code: no comments, no line structure, no docstrings (a string standing as a statement)."""
    tokens = []
    statement_start = True
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING):
            continue
        if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            statement_start = True
            tokens.append(token)
            continue
        if statement_start and token.type == tokenize.STRING:
            # A string opening a statement is a docstring or a bare string: text, not code. (Any code after it on
            # the same statement, such as .format(...), is still read.)
            continue
        statement_start = token.type == tokenize.OP and token.string in (":", ";")
        tokens.append(token)
    return tokens


def _string_value(token: tokenize.TokenInfo):
    try:
        return ast.literal_eval(token.string)
    except (ValueError, SyntaxError):  # an f-string
        return None


def _getattr_argument(tokens: list[tokenize.TokenInfo], index: int) -> bool:
    """Whether tokens[index] is the second argument of a ``getattr(...)`` call."""
    if index < 1 or tokens[index - 1].string != ",":
        return False
    depth = 0
    for back in range(index - 2, 0, -1):
        text = tokens[back].string
        if text in ")]}":
            depth += 1
        elif text in "([{":
            if depth == 0:
                return text == "(" and tokens[back - 1].string == "getattr"
            depth -= 1
        elif text == "," and depth == 0:
            return False  # a third argument or later
    return False


def red_line_uses(source: str) -> list[tuple[int, str]]:
    """Every use of a red-line construct in ``source``: (line, rule)."""
    tokens = _code_tokens(source)
    found = []
    for index, token in enumerate(tokens):
        before = tokens[index - 1].string if index else ""
        after = tokens[index + 1].string if index + 1 < len(tokens) else ""
        line = token.start[0]
        if token.type == tokenize.NAME:
            name = token.string
            if name in CODE_BUILTINS and after == "(" and before not in (".", "def"):
                found.append((line, f"{name}("))
            elif name in CODE_BUILTINS and before == "." and index > 1 and tokens[index - 2].string in (
                    "builtins", "__builtins__"):
                found.append((line, f"builtins.{name}"))
            elif name in PICKLE_NAMES:
                found.append((line, name))
            elif name in ("query", "eval") and before == "." and after == "(":
                found.append((line, f".{name}("))
            elif name in YAML_LOADS and before == "." and index > 1 and tokens[index - 2].string == "yaml":
                found.append((line, f"yaml.{name}("))
            elif name in ("UnsafeLoader", "FullLoader"):
                found.append((line, name))
        elif token.type == tokenize.STRING and _string_value(token) in CODE_BUILTINS:
            if _getattr_argument(tokens, index):
                found.append((line, f"getattr(builtins, {_string_value(token)!r})"))
    return found


def _scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = PROJECT_DIR / name
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return [path for path in files if "__pycache__" not in path.parts]


def test_the_tree_holds_no_red_line_construct_outside_the_allow_list():
    # given every Python file of the code (not the tests)
    uses: dict[tuple[str, str], list[int]] = {}
    for path in _scanned_files():
        relative = path.relative_to(PROJECT_DIR).as_posix()
        for line, rule in red_line_uses(path.read_text(encoding="utf-8")):
            uses.setdefault((relative, rule), []).append(line)

    # then only the allowed uses are there, no more of them than allowed
    new = [f"{path}:{line}: {rule}" for (path, rule), lines in sorted(uses.items())
           for line in lines[ALLOWED.get((path, rule), (0, ""))[0]:]]
    assert not new, ("red-line constructs (eval/exec/compile/pickle/joblib/unsafe YAML/DataFrame.query or .eval) "
                     "found; parse into an allow-listed syntax tree instead, or list the use in ALLOWED with why "
                     "it is safe:\n  " + "\n  ".join(new))
    # and every allow-list entry is still needed (a stale one would let a new use in unnoticed)
    stale = [f"{path}: {rule}" for (path, rule) in ALLOWED if (path, rule) not in uses]
    assert not stale, "allow-list entries no longer used; remove them:\n  " + "\n  ".join(stale)
    assert len(_scanned_files()) > 50  # the walk found the tree


@pytest.mark.parametrize(("source", "expected"), [
    ("result = eval(text)\n", ["eval("]),
    ("exec(code, {})\n", ["exec("]),
    ("f = getattr(builtins, 'exec')\n", ["getattr(builtins, 'exec')"]),
    ("import builtins\nbuiltins.eval(text)\n", ["builtins.eval"]),
    ("import pickle\n", ["pickle"]),
    ("from joblib import load\nmodel = load(path)\n", ["joblib"]),
    ("frame = pd.read_pickle(path)\n", ["read_pickle"]),
    ("rows = frame.query(user_filter)\n", [".query("]),
    ("total = frame.eval('a + b')\n", [".eval("]),
    ("data = yaml.load(text, Loader=yaml.UnsafeLoader)\n", ["yaml.load(", "UnsafeLoader"]),
    ('"""Never eval(), never pickle: models are skops files."""\nx = 1\n', []),
    ("def f():\n    '''Refuses eval( and exec( in rules.'''\n    return 1\n", []),
    ("x = 1  # no pickle here, and no eval(\n", []),
    ("pattern = re.compile(r'a+')\nscore = model.evaluate(x)\nname = 'eval'\n", []),
    ("tree = ast.parse(source, mode='eval')\n", []),
    ("message = 'do not {}'.format('eval')\n", []),
])
def test_the_scanner_finds_code_and_ignores_comments_docstrings_and_lookalikes(source, expected):
    assert [rule for _, rule in red_line_uses(source)] == expected
