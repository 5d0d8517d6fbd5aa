"""Inline notation for the report's running text, typeset like its display formulas.

The display formulas are images rendered by matplotlib's mathtext in DejaVu Sans (Latin and
lower-case Greek letters in DejaVu Sans Oblique, digits, operators and capital Greek upright).
Running text, table cells and captions use the same fonts as real text, so the PDF stays
searchable and copyable:

* section text marks notation with ``$...$`` spans in a small subset of TeX (``$x_t$``,
  ``$f_{t\\to s}(x)$``, ``$\\Phi_{1\\to 0}(x_1)$``, ``$\\mathrm{sg}(v)$``); :func:`prose` turns it into
  reportlab paragraph markup: italic letters, Unicode Greek letters and symbols, sub- and
  superscripts, spaced relations and binary operators (a line may break after them). A literal
  dollar is ``\\$``. Every span is also valid mathtext, so the same source could be a display
  formula (the tests check this);
* strings computed elsewhere (identity statements, check and mutant descriptions) are written
  in ASCII notation (``f_{t->s}``, ``Phi_{1->0}(x1)``, ``x1 - x0``, ``sigma_d^2``, ``d_t F``);
  :func:`auto` finds the formulas in such a string and marks them as ``$...$`` spans, leaving
  prose and identifiers (``meanflow.target.stop_gradient``, ``edm_sigma``, ``x_t_s``) alone.

Fonts come from matplotlib's own data directory (:func:`register_fonts`), so no system font is
needed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, unescape

__all__ = [
    "FONT",
    "MONO",
    "Inline",
    "auto",
    "break_long_words",
    "literal",
    "math_markup",
    "math_spans",
    "mpl_literal",
    "prose",
    "register_fonts",
    "unbreakable_pieces",
    "visible_text",
]

FONT = "DejaVuSans"
"""The text font: matplotlib's DejaVu Sans, the font of the display formulas."""
MONO = "DejaVuSansMono"
"""The monospace font (code, computer-algebra remainders)."""

SUB_TAG = '<sub rise="20%" size="72%">'
SUP_TAG = '<super rise="35%" size="72%">'
NBSP = "\xa0"
SHORT_FORMULA = 24
"""An inline formula of at most this many characters never breaks across lines; a longer one
may break after a relation or binary operator."""


class Inline(str):
    """Text whose ``$...$`` spans are inline math (what :func:`prose` renders). A plain ``str``
    given to a table cell is shown literally; an :class:`Inline` one is typeset."""

    __slots__ = ()


def literal(text: str) -> Inline:
    """``text`` as :class:`Inline` text shown as it is (its dollars escaped)."""
    return Inline(str(text).replace("$", r"\$"))


def mpl_literal(text: str) -> str:
    """``text`` for a matplotlib label, shown as it is (its dollars do not start mathtext)."""
    return str(text).replace("$", r"\$")


_registered = False


def register_fonts() -> None:
    """Register DejaVu Sans and DejaVu Sans Mono (regular, bold, oblique, bold oblique) from
    matplotlib's data directory with reportlab, once; ``<b>`` and ``<i>`` map onto the faces.

    Raises:
        RuntimeError: when matplotlib's font files are missing.
    """
    global _registered
    if _registered:
        return
    import matplotlib
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    faces = (("", 0, 0), ("-Bold", 1, 0), ("-Oblique", 0, 1), ("-BoldOblique", 1, 1))
    for family in (FONT, MONO):
        for suffix, bold, italic in faces:
            name = family + suffix
            path = ttf / f"{name}.ttf"
            if not path.is_file():
                raise RuntimeError(f"the report needs {path} (shipped with matplotlib)")
            if name not in pdfmetrics.getRegisteredFontNames():
                pdfmetrics.registerFont(TTFont(name, str(path)))
            addMapping(family, bold, italic, name)
    _registered = True


# --------------------------------------------------------------------------------------------
# TeX subset -> reportlab markup
# --------------------------------------------------------------------------------------------

_GREEK = {
    "alpha": "\u03b1",
    "beta": "\u03b2",
    "gamma": "\u03b3",
    "delta": "\u03b4",
    "epsilon": "\u03f5",
    "varepsilon": "\u03b5",
    "zeta": "\u03b6",
    "eta": "\u03b7",
    "theta": "\u03b8",
    "vartheta": "\u03d1",
    "iota": "\u03b9",
    "kappa": "\u03ba",
    "lambda": "\u03bb",
    "mu": "\u03bc",
    "nu": "\u03bd",
    "xi": "\u03be",
    "pi": "\u03c0",
    "rho": "\u03c1",
    "sigma": "\u03c3",
    "tau": "\u03c4",
    "upsilon": "\u03c5",
    "phi": "\u03d5",
    "varphi": "\u03c6",
    "chi": "\u03c7",
    "psi": "\u03c8",
    "omega": "\u03c9",
    "Gamma": "\u0393",
    "Delta": "\u0394",
    "Theta": "\u0398",
    "Lambda": "\u039b",
    "Xi": "\u039e",
    "Pi": "\u03a0",
    "Sigma": "\u03a3",
    "Upsilon": "\u03a5",
    "Phi": "\u03a6",
    "Psi": "\u03a8",
    "Omega": "\u03a9",
}
_REL = {
    "to": "\u2192",
    "rightarrow": "\u2192",
    "leftarrow": "\u2190",
    "Rightarrow": "\u21d2",
    "Leftrightarrow": "\u21d4",
    "mapsto": "\u21a6",
    "le": "\u2264",
    "leq": "\u2264",
    "ge": "\u2265",
    "geq": "\u2265",
    "ne": "\u2260",
    "neq": "\u2260",
    "approx": "\u2248",
    "sim": "\u223c",
    "equiv": "\u2261",
    "in": "\u2208",
    "propto": "\u221d",
    "ll": "\u226a",
    "gg": "\u226b",
}
_BIN = {"cdot": "\u00b7", "circ": "\u2218", "times": "\u00d7", "pm": "\u00b1"}
_ORD = {
    "partial": "\u2202",
    "nabla": "\u2207",
    "infty": "\u221e",
    "|": "\u2016",
    "{": "{",
    "}": "}",
    "%": "%",
    "ldots": "\u2026",
    "cdots": "\u22ef",
    "dots": "\u2026",
    "prime": "\u2032",
    "top": "T",
}
_LARGE = {"int": "\u222b", "sum": "\u2211", "prod": "\u220f"}
_FUNCTIONS = {"sin", "cos", "tan", "exp", "log", "ln", "max", "min", "det", "sup", "inf", "lim"}
_SPACES = {",": NBSP, ";": NBSP, ":": NBSP, " ": NBSP, "quad": NBSP * 2 + " ", "!": ""}
_ACCENTS = {"dot": "\u0307", "hat": "\u0302", "bar": "\u0304", "tilde": "\u0303"}
_TEXT_COMMANDS = {"mathrm", "operatorname", "mathit"}
_IGNORED = {"left", "right", "big", "Big", "displaystyle"}
_CHAR_KIND = {
    "+": "bin",
    "-": "bin",
    "*": "bin",
    "=": "rel",
    "<": "rel",
    ">": "rel",
    ",": "punct",
    ";": "punct",
    "(": "open",
    "[": "open",
    ")": "close",
    "]": "close",
}

_TEX_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|\d+(?:\.\d+)?|\s+|.", re.DOTALL)


@dataclass
class _Atom:
    kind: str  # ord, bin, rel, punct, open, close, large, space
    markup: str
    compound: bool = False  # a group holding a binary operator or relation (for \frac, \sqrt)


class _TexParser:
    """A recursive-descent reader of the TeX subset of :func:`math_markup`."""

    def __init__(self, tex: str, italic: bool) -> None:
        self.source = tex
        self.tokens = [t for t in _TEX_TOKEN.findall(tex) if not t.isspace()]
        self.pos = 0
        self.italic = italic

    def error(self, what: str) -> ValueError:
        return ValueError(f"inline math {self.source!r}: {what}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        if self.pos >= len(self.tokens):
            raise self.error("ends too early")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def letter(self, text: str) -> str:
        return f"<i>{text}</i>" if self.italic else text

    def raw_group(self) -> str:
        """The raw text of a ``{...}`` argument (for ``\\mathrm``)."""
        if self.take() != "{":
            raise self.error("expected {")
        depth, out = 1, list[str]()
        while True:
            tok = self.take()
            depth += (tok == "{") - (tok == "}")
            if depth == 0:
                return "".join(out)
            out.append(tok[1:] if tok in ("\\ ", "\\,", "\\_", "\\%") else tok)

    def group(self, script: bool) -> list[_Atom]:
        """Atoms up to the closing brace (the opening one already read)."""
        atoms = self.atoms(script, stop="}")
        self.take()
        return atoms

    def argument(self, script: bool) -> list[_Atom]:
        """A script or command argument: a braced group or one token."""
        tok = self.peek()
        if tok == "{":
            self.take()
            return self.group(script)
        if tok is None:
            raise self.error("an argument is missing")
        if tok in ("*", "-", "+", "'"):
            self.take()
            return [_Atom("ord", "\u2212" if tok == "-" else "\u2032" if tok == "'" else tok)]
        return [self.nucleus(script)]

    def atoms(self, script: bool, stop: str | None = None) -> list[_Atom]:
        out: list[_Atom] = []
        while (tok := self.peek()) is not None and tok != stop:
            if tok == "}":
                raise self.error("unbalanced }")
            atom = self.nucleus(script)
            out.append(self.scripts(atom))
        if stop is not None and tok is None:
            raise self.error(f"missing {stop}")
        return out

    def scripts(self, atom: _Atom) -> _Atom:
        markup = atom.markup
        while (tok := self.peek()) in ("_", "^", "'"):
            self.take()
            if tok == "'":
                markup += "\u2032"
                continue
            inner = _layout(self.argument(script=True), script=True)
            tag = SUB_TAG if tok == "_" else SUP_TAG
            markup += f"{tag}{inner}</{'sub' if tok == '_' else 'super'}>"
        return _Atom(atom.kind, markup, atom.compound)

    def nucleus(self, script: bool) -> _Atom:
        tok = self.take()
        if tok == "{":
            inner = self.group(script)
            return _Atom("ord", _layout(inner, script), _is_compound(inner))
        if tok in ("_", "^"):  # a script on an empty nucleus
            self.pos -= 1
            return _Atom("ord", "")
        if tok.startswith("\\"):
            return self.command(tok[1:], script)
        if tok.isalpha():
            return _Atom("ord", self.letter(escape(tok)))
        if tok[0].isdigit():
            return _Atom("ord", tok)
        if tok == "'":
            return _Atom("ord", "\u2032")
        if tok == "~":
            return _Atom("space", NBSP)
        if tok in ("{", "}", "$", "&", "#"):
            raise self.error(f"unexpected {tok}")
        kind = _CHAR_KIND.get(tok, "ord")
        return _Atom(kind, "\u2212" if tok == "-" else escape(tok))

    def command(self, name: str, script: bool) -> _Atom:
        if name in _GREEK:
            char = _GREEK[name]
            return _Atom("ord", self.letter(char) if char.islower() else char)
        if name in _REL:
            return _Atom("rel", _REL[name])
        if name in _BIN:
            return _Atom("bin", _BIN[name])
        if name in _ORD:
            return _Atom("ord", _ORD[name])
        if name in _LARGE:
            return _Atom("large", _LARGE[name])
        if name in _FUNCTIONS:
            return _Atom("ord", name)
        if name in _SPACES:
            return _Atom("space", _SPACES[name])
        if name in _TEXT_COMMANDS:
            text = escape(self.raw_group())
            return _Atom("ord", self.letter(text) if name == "mathit" else text)
        if name in _ACCENTS:
            base = self.argument(script)
            return _Atom("ord", _layout(base, script) + _ACCENTS[name])
        if name == "frac":
            num, den = self.argument(script), self.argument(script)
            return _Atom("ord", f"{_parenthesised(num, script)}/{_parenthesised(den, script)}")
        if name == "sqrt":
            return _Atom("ord", "\u221a" + _parenthesised(self.argument(script), script))
        if name in _IGNORED:
            return _Atom("space", "")
        if name == "$":
            return _Atom("ord", "$")
        raise self.error(f"unknown command \\{name}")


def _is_compound(atoms: list[_Atom]) -> bool:
    return any(a.kind in ("bin", "rel") for a in atoms[1:])


def _parenthesised(atoms: list[_Atom], script: bool) -> str:
    inner = _layout(atoms, script)
    compound = _is_compound(atoms) or (len(atoms) == 1 and atoms[0].compound)
    bracketed = bool(atoms) and atoms[0].kind == "open" and atoms[-1].kind == "close"
    return f"({inner})" if compound and not bracketed else inner


def _layout(atoms: list[_Atom], script: bool) -> str:
    """Join atoms with TeX's spacing, simplified: a relation or binary operator gets a space on
    each side (non-breaking before, so a line breaks after it), a comma a non-breaking space;
    a binary operator that starts a group or follows an operator, relation, comma or opening
    bracket is unary. Scripts are set tight."""
    out: list[str] = []
    prev = None
    for atom in atoms:
        kind = atom.kind
        if kind == "bin" and prev in (None, "bin", "rel", "punct", "open", "large"):
            kind = "ord"
        if script or kind in ("ord", "open", "close", "large", "space"):
            out.append(atom.markup)
        elif kind in ("bin", "rel"):
            out.append((NBSP if prev is not None else "") + atom.markup + " ")
        else:  # punct
            out.append(atom.markup + NBSP)
        if kind != "space":
            prev = kind
    markup = "".join(out).rstrip(" " + NBSP)
    return markup.replace("</i><i>", "")


def math_markup(tex: str, *, italic: bool = True) -> str:
    """Reportlab markup for ``tex``, an inline formula (without the dollars) in the TeX subset
    that mathtext also parses: letters, digits, ``_`` and ``^`` (braced or one token), ``'``,
    Greek letters, ``\\to \\le \\ge \\neq \\approx \\in \\Leftrightarrow`` and friends,
    ``\\cdot \\circ \\times \\pm``, ``\\partial \\nabla \\infty \\int \\sum \\|``, ``\\mathrm{..}``,
    ``\\frac{a}{b}`` (set as ``a/b``), ``\\sqrt{x}``, ``\\dot{x}``, ``\\sin`` and other function
    names, and the spaces ``\\, \\; \\quad``. Letters and lower-case Greek letters are italic
    (when ``italic``), as in mathtext. A formula of up to :data:`SHORT_FORMULA` characters
    stays on one line.

    Raises:
        ValueError: for an unknown command or unbalanced braces; the message names the formula.
    """
    parser = _TexParser(tex, italic)
    markup = _layout(parser.atoms(script=False), script=False)
    if len(visible_text(markup)) <= SHORT_FORMULA:
        markup = re.sub(r" (?![^<]*>)", NBSP, markup)  # t = 1 is never split across lines
    return markup


# --------------------------------------------------------------------------------------------
# Inline text ($...$ spans) -> markup
# --------------------------------------------------------------------------------------------

_SPAN = re.compile(r"(?<!\\)\$(.*?)(?<!\\)\$", re.DOTALL)


def math_spans(text: str) -> list[str]:
    """The TeX of every ``$...$`` span of ``text``."""
    return [m.group(1) for m in _SPAN.finditer(text)]


def _split_spans(text: str) -> list[tuple[str, bool]]:
    """``(piece, is_math)`` pairs; plain pieces have ``\\$`` turned into ``$``."""
    out: list[tuple[str, bool]] = []
    pos = 0
    for m in _SPAN.finditer(text):
        out.append((text[pos : m.start()], False))
        out.append((m.group(1), True))
        pos = m.end()
    rest = text[pos:]
    if re.search(r"(?<!\\)\$", rest):
        raise ValueError(f"unbalanced $ in {text!r}")
    out.append((rest, False))
    return [(p if math else p.replace(r"\$", "$"), math) for p, math in out if p]


_BREAK_AFTER = re.compile(r"(?<=[._:/\-])(?=[A-Za-z])")
"""Where a long name may break: after a dot, underscore, colon, slash or hyphen followed by a
letter (so numbers such as ``1.5e-13`` stay whole)."""
_BREAK_LEVELS = (
    re.compile(r"(?<=[.:/])(?=[A-Za-z])"),  # between the dotted parts of a name first
    _BREAK_AFTER,  # then inside a part, after an underscore or hyphen
)


def unbreakable_pieces(text: str, level: int = len(_BREAK_LEVELS)) -> list[str]:
    """The pieces of ``text`` that no line break may split: its words (non-breaking spaces
    hold a formula together) with ``level=0``; a long name also split between its dotted parts
    with ``level=1``; and after ``_`` or ``-`` too with ``level=2`` (the default)."""
    words = [word for word in re.split(r"[ \t\n]+", text) if word]
    for pattern in _BREAK_LEVELS[:level]:
        words = [piece for word in words for piece in pattern.split(word)]
    return words


def _fill(word: str, width: float, measure: Callable[[str], float], level: int) -> list[str]:
    """Greedy lines of ``word`` no wider than ``width``, breaking at ``_BREAK_LEVELS[level]``;
    a line still too wide is broken again at the next level."""
    lines, line = [], ""
    for piece in _BREAK_LEVELS[level].split(word):
        if line and measure(line + piece) > width:
            lines.append(line)
            line = piece
        else:
            line += piece
    lines.append(line)
    if level + 1 == len(_BREAK_LEVELS):
        return lines
    return [
        part
        for line in lines
        for part in ([line] if measure(line) <= width else _fill(line, width, measure, level + 1))
    ]


def break_long_words(text: str, width: float, measure: Callable[[str], float]) -> list[str]:
    """The words and spaces of ``text``, each word wider than ``width`` (as ``measure`` says)
    replaced by its lines joined with ``"\\n"``: a long name breaks between its dotted parts
    first (after ``. : /``), then after ``_`` or ``-`` inside a part; never inside a word (a
    piece that still does not fit stays whole)."""
    out = []
    for word in re.split(r"(\s+)", text):
        if not word or word.isspace() or measure(word) <= width:
            out.append(word)
        else:
            out.append("\n".join(_fill(word, width, measure, 0)))
    return out


def prose(
    text: str,
    *,
    italic: bool = True,
    break_width: float | None = None,
    measure: Callable[[str], float] | None = None,
    on_math: Callable[[str], None] | None = None,
) -> str:
    """Reportlab markup for :class:`Inline` text: plain pieces escaped, ``$...$`` spans typeset
    by :func:`math_markup`.

    Arguments:
        break_width, measure: with both, a plain word wider than ``break_width`` points is
            broken after ``. _ : / -`` (:func:`break_long_words`) with explicit line breaks, so
            that a narrow table column never splits a name inside a word.
        on_math: called with the TeX of every span (the document collects them for the tests).
    """
    out = []
    for piece, is_math in _split_spans(text):
        if is_math:
            if on_math is not None:
                on_math(piece)
            out.append(math_markup(piece, italic=italic))
        elif break_width is not None and measure is not None:
            words = break_long_words(piece, break_width, measure)
            out.append("".join(escape(w).replace("\n", "<br/>") for w in words))
        else:
            out.append(escape(piece))
    return "".join(out)


def visible_text(markup: str) -> str:
    """The characters a reader sees in ``markup`` (tags dropped, entities decoded; ``<br/>``
    kept as a newline)."""
    return unescape(re.sub(r"<[^>]*>", "", re.sub(r"<br\s*/>", "\n", markup)))


# --------------------------------------------------------------------------------------------
# ASCII notation -> $...$ spans
# --------------------------------------------------------------------------------------------

_ASCII_GREEK = {name: name for name in _GREEK if not name.startswith("var")}
_ASCII_GREEK.pop("epsilon")
_ASCII_GREEK.update({"epsilon": "varepsilon", "eps": "varepsilon"})
_ASCII_FUNCTIONS = {
    "sg": r"\mathrm{sg}",
    "sign": r"\mathrm{sign}",
    "div": r"\mathrm{div}",
    "MMD": r"\mathrm{MMD}",
    "Solver": r"\mathrm{Solver}",
    "id": r"\mathrm{id}",
    "tr": r"\mathrm{tr}",
    "Cov": r"\mathrm{Cov}",
    "Var": r"\mathrm{Var}",
    "Law": r"\mathrm{Law}",
    "jvp": r"\mathrm{jvp}",
    "vjp": r"\mathrm{vjp}",
    "grad": r"\nabla",
    **{f: "\\" + f for f in ("sin", "cos", "tan", "exp", "log", "max", "min")},
}
_DIFFERENTIALS = {"dt", "ds", "du", "dx", "dr", "dtau", "dsigma"}
_BRACE = r"\{(?:[^{}]|\{[^{}]*\})*\}"
_GREEK_ALT = "|".join(sorted(_ASCII_GREEK, key=len, reverse=True))
_SCRIPT = rf"[_^](?:{_BRACE}|-?[A-Za-z0-9]+|[-+*])"
_ASCII_TOKEN = re.compile(
    rf"""
    (?P<deriv>d(?P<num>(?:{_GREEK_ALT}|[A-Za-z])(?:_[A-Za-z0-9]+)?)?/d(?P<den>{_GREEK_ALT}|[a-z])
        (?![A-Za-z0-9_]))
    |(?P<word>[A-Za-z]+[0-9]*)(?P<scripts>(?:{_SCRIPT})*)(?P<post>[*'~]*(?:\^(?![A-Za-z0-9{{*+\-]))?)
    |(?P<number>\d+(?:\.\d+)?(?:e[-+]?\d+)?)
    |(?P<close>[)\]]|\|\|?)(?P<cscripts>(?:{_SCRIPT})*)
    |(?P<op>->|<=|>=|!=|\.\.\.|[-+*/=<>,;:(\[~])
    """,
    re.VERBOSE,
)
_OPS = {
    "~": r"\sim",
    "->": r"\to",
    "<=": r"\leq",
    ">=": r"\geq",
    "!=": r"\neq",
    "...": r"\ldots",
    "*": r"\cdot",
}


@dataclass
class _Token:
    tex: str
    kind: str  # atom, number, op, open, close, bar (| or ||), punct
    src: str = ""  # the ASCII it came from
    strong: bool = False  # unmistakably notation (a script, a Greek letter, an arrow, ...)
    letter: bool = False  # holds a letter (a variable)


def _script_tex(script: str) -> str | None:
    """The TeX of one ``_x`` / ``^{...}`` script, or None when it does not read as notation."""
    mark, arg = script[0], script[1:]
    if arg.startswith("{"):
        inner = _ascii_tex(arg[1:-1], lenient=True)
        return None if inner is None else f"{mark}{{{inner}}}"
    if arg in _ASCII_GREEK:
        return f"{mark}{{\\{_ASCII_GREEK[arg]}}}"
    if arg == "Dt":
        return mark + r"{\Delta t}"
    if len(arg) == 1 or arg.isdigit() or (arg[0] == "-" and len(arg) <= 3):
        return f"{mark}{{{arg}}}"
    if arg.isalpha():
        return f"{mark}{{\\mathrm{{{arg}}}}}"
    return None


def _word_token(m: re.Match[str], lenient: bool) -> _Token | None:
    """The token of a word with its scripts and postfixes (``x_t``, ``sigma_d^2``, ``F*``,
    ``x_t'``, ``x~``, ``x0^``), or None when the word is not notation."""
    word, post = m.group("word"), m.group("post")
    scripts = re.findall(_SCRIPT, m.group("scripts"))
    subs = sum(s[0] == "_" for s in scripts)
    if subs > 1 or sum(s[0] == "^" for s in scripts) > 1:
        return None  # x_t_s, c_out_t_minus_s: an identifier
    if re.search(r"[*']", post) and any(s[0] == "^" for s in scripts):
        return None  # x^2' or F^T*: a double superscript
    accent = r"\tilde" if "~" in post else r"\hat" if post.endswith("^") else None
    suffix = ""
    strong = bool(scripts) or bool(post)
    if word == "o" and not scripts and not post:
        return _Token(r"\circ", "op")
    if len(word) == 1:
        nucleus = r"\partial" if word == "d" and subs else word
    elif len(word) == 2 and word[1].isdigit():
        if subs:
            return None
        nucleus, suffix, strong = word[0], f"_{{{word[1]}}}", True
    elif word == "Dt":
        nucleus, strong = r"\Delta t", True
    elif re.fullmatch("[xyz]{2}", word) and not scripts:
        nucleus = word  # a product xy
    elif word in _ASCII_GREEK:
        nucleus, strong = "\\" + _ASCII_GREEK[word], True
    elif word in ("int", "sum") and scripts and all(len(s) == 2 or s[1] == "{" for s in scripts):
        nucleus = "\\" + word
    elif word in _ASCII_FUNCTIONS and all(
        sc[0] == "^" or len(sc) == 2 or sc[1] == "{" or sc[1:] in _ASCII_GREEK for sc in scripts
    ):
        nucleus = _ASCII_FUNCTIONS[word]
    elif word == "sqrt" and not scripts and not post:
        return _Token(r"\sqrt", "atom", letter=True)
    elif word in _DIFFERENTIALS and not scripts:
        nucleus = "d" + (word[1:] if len(word) == 2 else "\\" + word[1:])
    elif lenient and word.isalpha() and not scripts:
        nucleus = rf"\mathrm{{{word}}}"
    else:
        return None
    if accent is not None:
        if not (len(nucleus) == 1 or nucleus[1:] in _GREEK):
            return None
        nucleus = f"{accent}{{{nucleus}}}"
    tex = nucleus + suffix
    for script in scripts:
        part = _script_tex(script)
        if part is None:
            return None
        tex += part
    for char in post:
        if char in "*'":
            tex += "^{*}" if char == "*" else "'"
    return _Token(tex, "atom", strong=strong, letter=True)


def _tokens(chunk: str, lenient: bool = False) -> list[_Token] | None:
    """The notation tokens of a whitespace-free chunk, or None when it is not notation."""
    if re.search(r"\d-[A-Z]", chunk):  # 2-D, 3-D
        return None
    out: list[_Token] = []
    pos = 0
    while pos < len(chunk):
        m = _ASCII_TOKEN.match(chunk, pos)
        if m is None:
            return None
        pos = m.end()
        count = len(out)
        if m.group("deriv"):
            num = m.group("num")
            num_tex = "" if num is None else _ascii_tex(num, lenient=True)
            den = m.group("den")
            den_tex = "\\" + _ASCII_GREEK[den] if den in _ASCII_GREEK else den
            out.append(_Token(f"d{num_tex}/d{den_tex}", "atom", strong=True, letter=True))
        elif m.group("word"):
            token = _word_token(m, lenient)
            called = (
                len(out) >= 2
                and out[-1].kind == "open"
                and out[-2].kind == "atom"
                and chunk[pos : pos + 1] == ")"
                and m.group(0).isalpha()
            )
            if token is None and called:  # sg(target): a word as a function's argument
                token = _Token(rf"\mathrm{{{m.group(0)}}}", "atom", letter=True)
            if token is None:
                return None
            out.append(token)
        elif m.group("number"):
            number = m.group("number")
            out.append(_Token(rf"\mathrm{{{number}}}" if "e" in number else number, "number"))
        elif m.group("close"):
            scripts = re.findall(_SCRIPT, m.group("cscripts"))
            parts = [_script_tex(s) for s in scripts]
            if any(p is None for p in parts):
                return None
            bracket = m.group("close")
            kind = "close" if bracket in ")]" else "bar"
            tex = (r"\|" if bracket == "||" else bracket) + "".join(p for p in parts if p)
            out.append(_Token(tex, kind, strong=bool(scripts)))
        else:
            op = m.group("op")
            kind = "open" if op in "([" else "punct" if op in ",;:" else "op"
            strong = op in ("->", "<=", ">=", "!=")
            out.append(_Token(_OPS.get(op, op), kind, strong=strong))
        if len(out) > count:
            out[-1].src = m.group(0)
    # a function applied to arguments, F(x, t, s) or sg(v), is notation
    for a, b in itertools.pairwise(out):
        if a.kind == "atom" and b.kind == "open":
            a.strong = True
    return out


def _ascii_tex(text: str, lenient: bool = False) -> str | None:
    """All of ``text`` as TeX (inside a braced script), or None."""
    out = []
    for chunk in text.split():
        tokens = _tokens(chunk, lenient)
        if tokens is None:
            return None
        out.append(" ".join(t.tex for t in tokens))
    return " ".join(out)


_ARITH = {"+", "-", "/", "=", "<", ">", r"\cdot", "^"}
_QUOTED = re.compile(r"(?<![\w'])'(?=\S)([^'\n]+?)(?<=\S)'(?![\w])")
_TAIL = re.compile(r"(?<!\.)[.?!]+$")


def _is_notation(tokens: list[_Token]) -> bool:
    """Whether a run of tokens is a formula: it holds a variable and either an unmistakable
    token or an arithmetic operator (``t = 0``, ``x - y``); ``a``, ``(b)`` or ``1.5 s`` alone
    are text."""
    if any(t.kind == "op" and t.strong for t in tokens):  # an arrow or an inequality
        return True
    if not any(t.letter for t in tokens):
        return False
    if any(t.strong for t in tokens):
        return True
    return any(t.kind == "op" and t.tex in _ARITH for t in tokens) or any(
        t.tex.startswith(")^") for t in tokens
    )


_Run = list[_Token | str]  # tokens and the whitespace between them


def _plain(items: _Run) -> str:
    """Items as text; an arrow or inequality left over at a formula's edge is still typeset."""
    return "".join(
        literal(t)
        if isinstance(t, str)
        else f"${t.tex}$"
        if t.kind == "op" and t.strong
        else literal(t.src)
        for t in items
    )


def _body_tex(body: _Run) -> str:
    """The TeX of a balanced run; ``sqrt(...)`` becomes ``\\sqrt{(...)}``."""
    out: list[str] = []
    stack: list[bool] = []
    pending = False
    for i, t in enumerate(body):
        if isinstance(t, str):
            # the source's space between two operands (t x1, J_x F v) is kept as a thin space
            before, after = body[i - 1], body[i + 1]  # a run never starts or ends with a space
            juxtaposed = (
                not isinstance(before, str)
                and not isinstance(after, str)
                and before.kind in ("atom", "number", "close", "bar")
                and after.kind in ("atom", "number", "open", "bar")
            )
            out.append(r"\," if juxtaposed else " ")
            continue
        if t.tex == r"\sqrt":
            following = body[i + 1] if i + 1 < len(body) else None
            pending = isinstance(following, _Token) and following.kind == "open"
            out.append(r"\sqrt{" if pending else r"\mathrm{sqrt}")
            continue
        if t.kind == "open":
            stack.append(pending)
            pending = False
        tex = t.tex
        if t.kind == "close" and stack and stack.pop():
            tex = tex[0] + "}" + tex[1:]
        if out and re.search(r"\\[A-Za-z]+$", out[-1]) and tex[0].isalnum():
            out.append(" ")
        out.append(tex)
    return "".join(out)


def _emit_piece(piece: _Run, out: list[str]) -> None:
    """One math span for ``piece`` if it reads as notation; leading and trailing whitespace,
    operators and punctuation stay text."""
    start, end = 0, len(piece)

    def loose(item: _Token | str) -> bool:
        return isinstance(item, str) or item.kind in ("op", "punct")

    while start < end and loose(piece[start]):
        start += 1
    while end > start and loose(piece[end - 1]):
        end -= 1
    body = piece[start:end]
    tokens = [t for t in body if not isinstance(t, str)]
    out.append(_plain(piece[:start]))
    if tokens and _is_notation(tokens):
        out.append("$" + _body_tex(body) + "$")
    else:
        out.append(_plain(body))
    out.append(_plain(piece[end:]))


def _emit_run(run: _Run, out: list[str]) -> None:
    """Emit a run of notation tokens: an unmatched bracket stays text and splits the run."""
    stack: list[int] = []
    unmatched: set[int] = set()
    for i, t in enumerate(run):
        if isinstance(t, str):
            continue
        if t.kind == "open":
            stack.append(i)
        elif t.kind == "close":
            if stack:
                stack.pop()
            else:
                unmatched.add(i)
    unmatched.update(stack)
    piece: _Run = []
    for i, t in enumerate(run):
        if i in unmatched:
            _emit_piece(piece, out)
            out.append(_plain([t]))
            piece = []
        else:
            piece.append(t)
    _emit_piece(piece, out)


def _auto_unquoted(text: str) -> str:
    out: list[str] = []
    run: _Run = []
    depth = 0
    for part in re.split(r"(\s+)", text):
        if not part:
            continue
        if part.isspace():
            if run:
                run.append(part)
            else:
                out.append(part)
            continue
        tail_match = _TAIL.search(part)
        tail = tail_match.group(0) if tail_match and tail_match.start() > 0 else ""
        core = part[: len(part) - len(tail)]
        tokens = _tokens(core)
        if tokens is None:
            _emit_run(run, out)
            run, depth = [], 0
            out.append(_plain([part]))
            continue
        run.extend(tokens)
        depth += sum(t.kind == "open" for t in tokens) - sum(t.kind == "close" for t in tokens)
        if tail or (tokens[-1].kind == "punct" and depth <= 0):
            _emit_run(run, out)
            run, depth = [], 0
            out.append(_plain([tail]))
    _emit_run(run, out)
    return "".join(out)


def auto(text: str) -> Inline:
    """Mark the ASCII formulas of ``text`` (a string written elsewhere) as ``$...$`` spans.

    A formula is a run of whitespace-separated chunks made only of notation -- single letters,
    ``x0``/``x1``, Greek names (``sigma``, ``Phi``), a letter or Greek name with one subscript
    and one superscript (``x_t``, ``f_{t->s}``, ``sigma_d^2``, ``C_k^{-1}``), primes and stars
    (``x_t'``, ``F*``), ``d_t`` (a partial derivative), ``dF/dt``, ``int_s^t``, ``sum_k``,
    function names (``sg``, ``sqrt``, ``cos``, ``sign``), numbers, brackets and operators
    (``-> <= != + - * / = ^``) -- that holds a variable and either an unmistakable token or an
    operator. Everything else is text: words, identifiers with several underscores or dots
    (``meanflow.target.exact_map_fixed_point``, ``c_out_t_minus_s``, ``x_t_s``), ``2-D``,
    numbers with units (``1.5 s``), a lone ``a``. Quotes (``'v d_{x_t} F'``) stay text around
    their content.
    """
    out = []
    pos = 0
    for m in _QUOTED.finditer(text):
        out.append(_auto_unquoted(text[pos : m.start()]))
        out.append("'" + _auto_unquoted(m.group(1)) + "'")
        pos = m.end()
    out.append(_auto_unquoted(text[pos:]))
    return Inline("".join(out))
