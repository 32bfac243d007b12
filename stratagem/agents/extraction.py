"""Step 1 of ``programs.py``: find the program inside an LLM completion, in linear time.

The completion is untrusted model output, read by the parent before any sandbox is involved: its
size is capped (MAX_COMPLETION_CHARS), fences are found in one pass over its lines, and the parser
is called a bounded number of times (MAX_PARSE_ATTEMPTS), so no crafted text makes extraction
quadratic. The program is the last fenced block that defines the function, else the whole completion where
it all parses and defines the function at top level, else the bare code from
the first ``def``/``import`` (with the constants just before it), trailing prose and a cut-off last
line trimmed away.
"""

from __future__ import annotations

import ast
import re
import warnings

from stratagem.agents.results import ProgramError

MAX_COMPLETION_CHARS = 200_000
"""Longer completions are refused before any parsing. A completion is a few thousand tokens, a program a
few hundred lines; anything past this cap is runaway generation or an attempt to tie up the parent."""
MAX_PARSE_ATTEMPTS = 12
"""How many times ``_trim_to_parseable`` (and, separately, ``_with_leading_constants``) may call
``ast.parse``: with the size cap, extraction is a constant number of linear passes over the completion."""

_PYTHON_TAGS = frozenset({"", "python", "py", "python3"})
_FENCE_TAG = re.compile(r"[ \t]*([\w+-]*)")  # matched after a line's opening ```: the block's language
_CODE_START = re.compile(r"^(def |import |from |async def |class |@)", re.MULTILINE)
# A line the constants before bare code may be made of, judged by how it starts: indented or blank (a
# continuation), a comment, a literal or bracket, or an assignment (``NAME =``, ``A, B =``, ``NAME: T =``).
# Every quantifier is followed by a character it cannot match, so a match is linear in the line's length.
_TRIPLE_QUOTE = re.compile("'''|\"\"\"")
_CONSTANT_LINE = re.compile(r"""[ \t\f\r\n#0-9+\-.'"()\[\]{}]|[A-Za-z_][\w.]*[ \t]*(?:[,:][^=\n]*)?=(?!=)""")


class _TooNested(SyntaxError):
    """Source the parser gave up on for its depth (RecursionError, MemoryError): no line to cut at."""


def parse(source: str) -> ast.Module:
    """``ast.parse``, with every way it can fail turned into a SyntaxError (never RecursionError & co.). Quiet: the
    tokenizer's warnings on a model's text (``1if``, ``"\\d"``) are the program's, not the user's terminal's."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source)
    except (RecursionError, MemoryError):
        raise _TooNested("too deeply nested to parse; flatten the nesting") from None
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes, on older Pythons
        error = exc if isinstance(exc, SyntaxError) else SyntaxError(str(exc))
        if error.lineno is None and "\0" in source:  # point at the null byte, so trimming can cut there
            error.lineno = source.count("\n", 0, source.index("\0")) + 1
        raise error from None


def extract(completion: str, function: str) -> str:
    """The program inside a completion; raises ProgramError(syntax, no-code) when there is none.

    Linear in the completion's length, which is capped at MAX_COMPLETION_CHARS (ProgramError(syntax, too-long)).
    """
    if len(completion) > MAX_COMPLETION_CHARS:
        raise ProgramError("syntax", "too-long", f"the completion is {len(completion):,} characters, over the "
                           f"limit of {MAX_COMPLETION_CHARS:,}; answer with one short program (a few hundred "
                           "lines at most) in a single ```python block")  # fmt: skip
    # [ \t\f], not \s: \s crosses newlines, and a run of blank lines would be rescanned from every line start.
    definition = re.compile(rf"^[ \t\f]*(?:async[ \t\f]+)?def[ \t\f]+{re.escape(function)}[ \t\f]*\(", re.MULTILINE)
    for tag, body in reversed(_fenced_blocks(completion)):
        if tag in _PYTHON_TAGS and definition.search(body):
            return _trim_to_parseable(body)
    if (whole := _whole_program(completion, function)) is not None:
        return whole
    start = _CODE_START.search(completion)
    if start is None or not definition.search(completion):
        raise ProgramError("syntax", "no-code", f"no definition of {function}(...) found in the completion")
    return _trim_to_parseable(_with_leading_constants(completion[: start.start()]) + completion[start.start() :])


_PROGRAM_PARTS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign)


def _whole_program(completion: str, function: str) -> str | None:
    """The completion itself when all of it is a program file: imports, constants, docstrings and functions, one
    of them ``function``. Its strings may hold code of their own (a cell it sends), which the search for the
    first ``def`` would cut into; anything else at top level (a call, prose) leaves it to that search."""
    try:
        body = parse(completion).body
    except SyntaxError:
        return None
    docstring = [isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body]
    if not all(isinstance(node, _PROGRAM_PARTS) or doc for node, doc in zip(body, docstring, strict=True)):
        return None
    defines = any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function for node in body)
    return completion if defines else None


def _fenced_blocks(completion: str) -> list[tuple[str, str]]:
    """``(language, body)`` of each fenced block, in order, in one pass over the lines.

    ``` opens a block (its language the word after the backticks, the rest of that line ignored) and
    the next ``` closes it, the text before it on its line kept; an unclosed last block runs to the end
    of the completion. Each line is searched from where the previous fence ended, so nothing is rescanned.
    """
    blocks: list[tuple[str, str]] = []
    tag: str | None = None  # None: outside a block
    body: list[str] = []
    for line in completion.split("\n"):
        position = 0
        while True:
            fence = line.find("```", position)
            if tag is None:
                if fence >= 0:
                    match = _FENCE_TAG.match(line, fence + 3)
                    tag, body = (match.group(1) if match else "").lower(), []
                break
            if fence < 0:
                body.append(line[position:])
                break
            body.append(line[position:fence])
            blocks.append((tag, "\n".join(body)))
            tag, position = None, fence + 3
    if tag is not None:
        blocks.append((tag, "\n".join(body)))
    return blocks


def _with_leading_constants(before: str) -> str:
    """The longest tail of the text before the first ``def``/``import`` made only of assignments.

    Bare code often opens with constants (``WEIGHTS = [...]``) that the function needs; prose
    before them ("Here is my answer:") does not parse as assignments and stays out. The tail is
    looked for from the first line after the last line that cannot belong to constants (one that
    starts like prose), then moved forward past syntax errors and non-assignments, with at most
    MAX_PARSE_ATTEMPTS parses; if none succeeds, no constants are kept.
    """
    lines = before.splitlines(keepends=True)
    in_string, quote = [], None  # whether each line starts inside a triple-quoted string (``S = """...``)
    for line in lines:
        in_string.append(quote is not None)
        for match in _TRIPLE_QUOTE.finditer(line):
            quote = match.group() if quote is None else None if match.group() == quote else quote
    start = len(lines)
    while start > 0 and (in_string[start - 1] or _CONSTANT_LINE.match(lines[start - 1])):
        start -= 1
    for _ in range(MAX_PARSE_ATTEMPTS):
        if start >= len(lines):
            break
        tail = "".join(lines[start:])
        try:
            body = parse(tail).body
        except _TooNested:
            break
        except SyntaxError as exc:  # retry from the line of the error: the lines before it are what failed
            start += max(1, (exc.lineno or 1) - 1)
            continue
        others = [node for node in body if not isinstance(node, (ast.Assign, ast.AnnAssign))]
        if not others:
            return tail
        start += others[-1].end_lineno or others[-1].lineno  # past the last statement that is not an assignment
    return ""


def _trim_to_parseable(code: str) -> str:
    """Drop trailing lines (prose after the code, a truncated last line) until the code parses.

    Parses the whole code first; on a syntax error, cuts just before the error's line (the first line
    of trailing prose, or of a truncated statement) and tries again, at most MAX_PARSE_ATTEMPTS times,
    then once more cut before the last top-level statement. The longest prefix that parses wins; when
    none does, the whole code's syntax error is reported.
    """
    lines = code.rstrip().splitlines()
    first: SyntaxError | None = None
    end = len(lines)
    for _ in range(MAX_PARSE_ATTEMPTS):
        while end > 0 and not lines[end - 1].strip():
            end -= 1
        if end == 0:
            break
        candidate = "\n".join(lines[:end]).rstrip() + "\n"
        try:
            parse(candidate)
            return candidate
        except _TooNested as exc:  # no line to cut at, and prose never nests this deep: report
            first = first or exc
            break
        except SyntaxError as exc:
            first = first or exc
            end = min(end, exc.lineno or end) - 1  # lineno may lie past the end (unexpected EOF)
    else:  # out of attempts (a deep stack of truncated blocks): cut before the last top-level statement
        end = next((i for i in range(end - 1, 0, -1) if lines[i][:1].isidentifier() or lines[i][:1] == "@"), 0)
        if end > 0:
            candidate = "\n".join(lines[:end]).rstrip() + "\n"
            try:
                parse(candidate)
                return candidate
            except SyntaxError:
                pass
    if first is None:
        raise ProgramError("syntax", "no-code", "the program is empty")
    raise ProgramError("syntax", "syntax", first.msg or "invalid syntax", first.lineno)
