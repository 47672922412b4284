"""Parse the text form written by `rlx.ir.printer`.

Every node is re-checked through the op registry as it is read (attributes
canonicalized, result types re-inferred), and a printed type that disagrees
with the inferred one is an error at that line and column. Errors always carry
line and column so a hand-edited ``.rlx`` file is easy to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlx.errors import AttributeSchemaError, ParseError, RlxError
from rlx.ir.builder import GraphBuilder
from rlx.ir.graph import Graph, Value
from rlx.ir.ops import OPS
from rlx.ir.types import DTYPES, TensorType

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+|\#[^\n]*)
  | (?P<value>%[A-Za-z0-9_.\-]+)
  | (?P<weight>@[A-Za-z0-9_.\-]+)
  | (?P<arrow>->)
  | (?P<number>[-+]?(?:inf|nan|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![A-Za-z0-9_]))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.\-]*)
  | (?P<punct>[{}()\[\],:=])
""", re.VERBOSE)


@dataclass
class Tok:
    kind: str
    text: str
    line: int
    col: int


def tokenize(text: str, source: str) -> list[Tok]:
    toks = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ParseError(f"unexpected character {text[pos]!r}", line, pos - line_start + 1,
                             source)
        kind = m.lastgroup
        if kind != "ws":
            toks.append(Tok(kind, m.group(), line, pos - line_start + 1))
        nl = m.group().count("\n")
        if nl:
            line += nl
            line_start = m.start() + m.group().rfind("\n") + 1
        pos = m.end()
    toks.append(Tok("eof", "", line, pos - line_start + 1))
    return toks


class _Parser:
    def __init__(self, text: str, source: str):
        self.source = source
        self.toks = tokenize(text, source)
        self.i = 0

    # ---- token helpers --------------------------------------------------------

    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def error(self, message: str, tok: Tok | None = None) -> ParseError:
        tok = tok or self.tok
        return ParseError(message, tok.line, tok.col, self.source)

    def expect(self, kind: str, text: str | None = None) -> Tok:
        tok = self.tok
        if tok.kind != kind or (text is not None and tok.text != text):
            want = repr(text) if text else kind
            got = repr(tok.text) if tok.text else "end of input"
            raise self.error(f"expected {want}, got {got}")
        self.i += 1
        return tok

    def accept(self, kind: str, text: str | None = None) -> Tok | None:
        tok = self.tok
        if tok.kind == kind and (text is None or tok.text == text):
            self.i += 1
            return tok
        return None

    # ---- grammar --------------------------------------------------------------

    def parse_file(self) -> Graph:
        self.expect("ident", "graph")
        name = self.expect("ident").text
        graph = self.parse_block(GraphBuilder(name), top=True)
        if self.tok.kind != "eof":
            raise self.error(f"unexpected {self.tok.text!r} after the graph")
        return graph

    def parse_type(self) -> TensorType:
        tok = self.expect("ident")
        if tok.text not in DTYPES:
            raise self.error(f"unknown dtype {tok.text!r}", tok)
        self.expect("punct", "[")
        dims = []
        if not self.accept("punct", "]"):
            while True:
                t = self.expect("number")
                if not re.fullmatch(r"\d+", t.text):
                    raise self.error(f"dimension must be a non-negative integer, got {t.text}", t)
                dims.append(int(t.text))
                if self.accept("punct", "]"):
                    break
                self.expect("punct", ",")
        return TensorType(tuple(dims), tok.text)

    def parse_attr_value(self):
        tok = self.tok
        if self.accept("punct", "["):
            items = []
            if not self.accept("punct", "]"):
                while True:
                    items.append(self.parse_attr_value())
                    if self.accept("punct", "]"):
                        break
                    self.expect("punct", ",")
            return tuple(items)
        if tok.kind == "number":
            self.i += 1
            text = tok.text
            if re.fullmatch(r"[-+]?\d+", text):
                return int(text)
            return float(text)
        if tok.kind == "string":
            self.i += 1
            import json

            return json.loads(tok.text)
        if tok.kind == "ident" and tok.text in ("true", "false", "none"):
            self.i += 1
            return {"true": True, "false": False, "none": None}[tok.text]
        raise self.error(f"expected an attribute value, got {tok.text!r}")

    def parse_attrs(self) -> dict:
        attrs: dict = {}
        self.expect("punct", "{")
        if self.accept("punct", "}"):
            return attrs
        while True:
            key = self.expect("ident")
            if key.text in attrs:
                raise self.error(f"attribute {key.text!r} given twice", key)
            self.expect("punct", "=")
            attrs[key.text] = self.parse_attr_value()
            if self.accept("punct", "}"):
                return attrs
            self.expect("punct", ",")

    def is_attr_block(self) -> bool:
        return (self.tok.kind == "punct" and self.tok.text == "{" and
                ((self.peek().kind == "ident" and self.peek(2).text == "=")
                 or self.peek().text == "}"))

    def lookup(self, scope: dict, tok: Tok) -> Value:
        v = scope.get(tok.text)
        if v is None:
            raise self.error(f"undefined value {tok.text}", tok)
        return v

    def parse_call(self, scope: dict):
        op_tok = self.expect("ident")
        if op_tok.text not in OPS:
            raise self.error(f"unknown op {op_tok.text!r}", op_tok)
        self.expect("punct", "(")
        operands = []
        if not self.accept("punct", ")"):
            while True:
                tok = self.tok
                if tok.kind in ("value", "weight"):
                    self.i += 1
                    operands.append(self.lookup(scope, tok))
                elif self.accept("ident", "_"):
                    operands.append(None)
                else:
                    raise self.error(f"expected an operand (%value, @weight or _), got "
                                     f"{tok.text!r}")
                if self.accept("punct", ")"):
                    break
                self.expect("punct", ",")
        attrs = self.parse_attrs() if self.is_attr_block() else {}
        return op_tok, operands, attrs

    def emit(self, b: GraphBuilder, op_tok: Tok, operands, attrs, results, body=None):
        try:
            out = b.emit(op_tok.text, operands, attrs, body=body,
                         out_names=[name for name, _, _ in results])
        except RlxError as e:
            raise self.error(str(e).split(" (at ")[0], op_tok) from None
        outs = out if isinstance(out, tuple) else (out,)
        if len(outs) != len(results):
            raise self.error(f"{op_tok.text} produces {len(outs)} results, "
                             f"{len(results)} written", op_tok)
        for v, (name, typ, tok) in zip(outs, results):
            if v.type != typ:
                raise self.error(f"{op_tok.text} yields {v.type}, but the text says {typ}", tok)
            if v.name != name:
                raise self.error(f"value %{name} defined twice", tok)
        return outs

    def parse_block(self, b: GraphBuilder, top: bool = False) -> Graph:
        """Parse ``{ item* }`` into the builder's graph."""
        self.expect("punct", "{")
        scope: dict[str, Value] = {}
        g = b.graph
        while not self.accept("punct", "}"):
            tok = self.tok
            if tok.kind == "eof":
                raise self.error("missing '}' at end of graph")
            if self.accept("ident", "input"):
                vt = self.expect("value")
                self.expect("punct", ":")
                typ = self.parse_type()
                if vt.text in scope:
                    raise self.error(f"value {vt.text} defined twice", vt)
                try:
                    scope[vt.text] = b.input(vt.text[1:], typ.shape, typ.dtype)
                except RlxError as e:
                    raise self.error(str(e), vt) from None
            elif self.accept("ident", "weight"):
                if not top:
                    raise self.error("weights are declared at graph level only", tok)
                wt = self.expect("weight")
                self.expect("punct", ":")
                typ = self.parse_type()
                if wt.text in scope:
                    raise self.error(f"weight {wt.text} declared twice", wt)
                scope[wt.text] = b.weight(wt.text[1:], typ.shape, typ.dtype)
            elif self.accept("ident", "derived"):
                wt = self.expect("weight")
                self.expect("punct", ":")
                typ = self.parse_type()
                self.expect("punct", "=")
                if wt.text in scope:
                    raise self.error(f"weight {wt.text} declared twice", wt)
                op_tok, operands, attrs = self.parse_call(scope)
                scope[wt.text] = self.emit_derived(b, op_tok, operands, attrs, wt, typ)
            elif self.accept("ident", "output"):
                while True:
                    t = self.tok
                    if t.kind not in ("value", "weight"):
                        raise self.error(f"expected a value to output, got {t.text!r}")
                    self.i += 1
                    g.outputs.append(self.lookup(scope, t))
                    if not self.accept("punct", ","):
                        break
            elif tok.kind == "value":
                results = []
                while True:
                    vt = self.expect("value")
                    self.expect("punct", ":")
                    typ = self.parse_type()
                    if vt.text in scope:
                        raise self.error(f"value {vt.text} defined twice", vt)
                    results.append((vt.text[1:], typ, vt))
                    if not self.accept("punct", ","):
                        break
                self.expect("punct", "=")
                op_tok, operands, attrs = self.parse_call(scope)
                body = None
                if self.tok.kind == "punct" and self.tok.text == "{":
                    body = self.parse_block(GraphBuilder(f"{results[0][0]}.body"))
                for v in self.emit(b, op_tok, operands, attrs, results, body):
                    scope["%" + v.name] = v
            else:
                raise self.error(f"expected input, weight, derived, output or a %value, "
                                 f"got {tok.text!r}")
        return g

    def emit_derived(self, b, op_tok, operands, attrs, wt, typ) -> Value:
        for v in operands:
            if v is not None and v.kind != "weight":
                raise self.error("derived weights may only use weights", op_tok)
        # Build the node in a scratch builder, then move it to graph.derived.
        scratch = GraphBuilder("scratch")
        try:
            out = scratch.emit(op_tok.text, operands, attrs, out_names=["derived"])
        except RlxError as e:
            raise self.error(str(e).split(" (at ")[0], op_tok) from None
        if out.type != typ:
            raise self.error(f"{op_tok.text} yields {out.type}, but the text says {typ}", wt)
        node = scratch.graph.nodes[0]
        out.name, out.kind = wt.text[1:], "weight"
        b.graph.weights[out.name] = out
        b.graph.derived.append(node)
        return out


def parse(text: str, source: str = "<text>") -> Graph:
    """Parse IR text; raises ParseError with line and column on malformed input."""
    try:
        return _Parser(text, source).parse_file()
    except AttributeSchemaError as e:  # pragma: no cover - converted above in practice
        raise ParseError(str(e), 1, 1, source) from None


def parse_file(path) -> Graph:
    """Parse a ``.rlx`` file; an unreadable or non-UTF-8 file is an RlxError naming it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RlxError(f"cannot read IR file {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ParseError(f"not UTF-8 text (byte 0x{data[e.start]:02x})", line, col,
                         str(path)) from None
    return parse(text, str(path))
