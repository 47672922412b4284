"""Malformed IR text: a ParseError at the right line and column, with a useful message.

Expected positions are computed from the text itself (the 1-based column of a
marker on its line), so each case states *which token* is at fault.
"""

from __future__ import annotations

import pytest

from rlx.errors import ParseError, RlxError
from rlx.ir import parse, parse_file

GOOD = """graph g {
  input %x: f32[2,3]
  weight @w: f32[3]
  %y: f32[2,3] = add(%x, @w)
  output %y
}
"""


def _at(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """(line, column) of the nth occurrence of needle, 1-based."""
    pos = -1
    for _ in range(nth):
        pos = text.index(needle, pos + 1)
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


def _swap(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


CASES = [
    # (name, text, token at fault, occurrence, message fragment)
    ("unknown op", _swap("add(", "frob("), "frob", 1, "unknown op 'frob'"),
    ("bad dtype", _swap("input %x: f32[2,3]", "input %x: f33[2,3]"), "f33", 1,
     "unknown dtype 'f33'"),
    ("fractional dim", _swap("f32[2,3]\n  weight", "f32[2.5,3]\n  weight"), "2.5", 1,
     "dimension must be a non-negative integer"),
    ("negative dim", _swap("@w: f32[3]", "@w: f32[-3]"), "-3", 1,
     "dimension must be a non-negative integer"),
    ("undefined value", _swap("add(%x, @w)", "add(%x, %nope)"), "%nope", 1,
     "undefined value %nope"),
    ("undefined weight", _swap("add(%x, @w)", "add(%x, @v)"), "@v", 1, "undefined value @v"),
    ("undefined output", _swap("output %y", "output %q"), "%q", 1, "undefined value %q"),
    ("use before definition", _swap("%y: f32[2,3] = add(%x, @w)\n  output %y",
                                    "%y: f32[2,3] = add(%x, %z)\n  %z: f32[2,3] = neg(%x)\n"
                                    "  output %y"), "%z", 1, "undefined value %z"),
    ("duplicate value", _swap("  output %y", "  %y: f32[2,3] = neg(%x)\n  output %y"),
     "%y", 2, "value %y defined twice"),
    ("duplicate input", _swap("  weight", "  input %x: f32[2,3]\n  weight"), "%x", 2,
     "value %x defined twice"),
    ("duplicate weight", _swap("  %y", "  weight @w: f32[3]\n  %y"), "@w", 2,
     "weight @w declared twice"),
    ("result type mismatch", _swap("%y: f32[2,3] = add", "%y: f32[3,2] = add"), "%y", 1,
     "add yields f32[2,3], but the text says f32[3,2]"),
    ("operand shape mismatch", _swap("@w: f32[3]", "@w: f32[4]"), "add", 1,
     "add: shapes do not broadcast"),
    ("unknown attribute", _swap("add(%x, @w)", "add(%x, @w) {alpha=2.0}"), "add", 1,
     "unknown attribute(s) ['alpha']"),
    ("attribute of wrong kind", _swap("add(%x, @w)\n", "add(%x, @w)\n  %s: f32[2,3] = "
                                      "softmax(%y) {axis=\"last\"}\n"), "softmax", 1,
     "softmax: attribute axis='last' is not of kind int"),
    ("attribute twice", _swap("add(%x, @w)\n", "add(%x, @w)\n  %s: f32[2,3] = "
                              "softmax(%y) {axis=1, axis=0}\n"), "axis", 2,
     "attribute 'axis' given twice"),
    ("missing required attribute", _swap("add(%x, @w)\n", "add(%x, @w)\n  %s: f32[3,2] = "
                                         "transpose(%y)\n"), "transpose", 1,
     "missing required attribute 'perm'"),
    ("wrong operand count", _swap("add(%x, @w)", "add(%x)"), "add", 1, "add takes 2 inputs"),
    ("missing closing brace", GOOD.rstrip().rstrip("}"), None, 0, "missing '}'"),
    ("bad token", _swap("add(%x, @w)", "add(%x, $w)"), "$", 1, "unexpected character '$'"),
    ("missing colon", _swap("input %x: f32", "input %x f32"), "f32", 1, "expected ':'"),
    ("not a graph", "grph g {\n}\n", "grph", 1, "expected 'graph'"),
    ("text after the graph", GOOD + "extra\n", "extra", 1, "unexpected 'extra' after the graph"),
    ("derived from an input", _swap("  %y", "  derived @d: f32[2,3] = neg(%x)\n  %y"), "neg",
     1, "derived weights may only use weights"),
    ("weight inside a body", _swap("  output %y", "  %f: f32[2,3] = fused(%y) {kind=\"other\"} {\n"
                                   "    weight @v: f32[3]\n  }\n  output %y"), "weight @v", 1,
     "weights are declared at graph level only"),
    ("garbage statement", _swap("  output %y", "  = neg(%x)\n  output %y"), "=", 2,
     "expected input, weight, derived, output or a %value"),
]


@pytest.mark.parametrize("name,text,needle,nth,fragment", CASES, ids=[c[0] for c in CASES])
def test_malformed_text_gives_line_and_column(name, text, needle, nth, fragment):
    with pytest.raises(ParseError) as info:
        parse(text, source="case.rlx")
    err = info.value
    if needle is None:  # end of input
        line, col = text.count("\n") + 1, len(text) - text.rfind("\n")
    else:
        line, col = _at(text, needle, nth)
    assert (err.line, err.column) == (line, col), f"{err} (expected {line}:{col})"
    assert fragment in str(err)
    assert str(err).startswith(f"case.rlx:{line}:{col}: ")
    assert "\n" not in str(err)
    assert " (at " not in str(err), "parse errors must not blame rlx's own source lines"


def test_good_text_parses():
    g = parse(GOOD)
    assert [n.op for n in g.nodes] == ["add"]


def test_parse_file_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.rlx"
    p.write_text(_swap("add(", "frob("))
    with pytest.raises(ParseError, match=r"bad\.rlx:4:\d+: unknown op 'frob'"):
        parse_file(p)


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_parse_file_unreadable_files_are_rlx_errors(tmp_path, kind):
    p = tmp_path / "x.rlx"
    if kind == "directory":
        p.mkdir()
    elif kind == "binary":
        p.write_bytes(b"\xff\xfe\x00graph")
    with pytest.raises(RlxError, match=r"x\.rlx"):
        parse_file(p)


def test_too_few_results_for_a_multi_result_op():
    from tests.support.opcheck import sample_graph
    from rlx.ir import print_graph

    text = print_graph(sample_graph("fused"))
    text = text.replace("%fused: f32[2,8], %fused_1: f32[2,1] = fused", "%fused: f32[2,8] = fused")
    text = text.replace("output %fused, %fused_1", "output %fused")
    with pytest.raises(ParseError, match="fused produces 2 results, 1 names given") as info:
        parse(text)
    assert (info.value.line, info.value.column) == _at(text, "fused(")
