package hcljson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/token"
)

// MaxDepth bounds nesting: configs and policies nest a few levels, and a
// deeper document is a mistake or an attempt to exhaust the stack.
const MaxDepth = 32

// Error is a problem at a position of the document.
type Error struct {
	Pos token.Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Parse reads src, a JSON object, as the HCL parser would read the same
// document; filename goes into every position.
func Parse(filename string, src []byte) (*ast.ObjectList, error) {
	r := &reader{src: src, lines: []int{0}, file: filename, dec: json.NewDecoder(bytes.NewReader(src))}
	for i, c := range src {
		if c == '\n' {
			r.lines = append(r.lines, i+1)
		}
	}
	r.dec.UseNumber()
	n, err := r.node()
	if err != nil {
		return nil, err
	}
	obj, ok := n.(*ast.ObjectType)
	if !ok {
		return nil, &Error{n.Pos(), "expected a JSON object at the top level, got " + Describe(n)}
	}
	if p := r.next(); !errors.Is(r.skip(), io.EOF) {
		return nil, &Error{p, "unexpected data after the top-level object"}
	}
	return obj.List, nil
}

// Describe names the kind of value n is, for messages.
func Describe(n ast.Node) string {
	switch n := n.(type) {
	case *ast.ObjectType:
		return "an object"
	case *ast.ListType:
		return "a list"
	case *ast.LiteralType:
		switch n.Token.Type {
		case token.STRING, token.HEREDOC:
			return "a string"
		case token.NUMBER, token.FLOAT:
			return "a number"
		case token.BOOL:
			return "a bool"
		}
	}
	return "null"
}

type reader struct {
	src   []byte
	lines []int // byte offset at which each line starts
	file  string
	dec   *json.Decoder
	depth int
}

func (r *reader) skip() error {
	_, err := r.dec.Token()
	return err
}

func (r *reader) node() (ast.Node, error) {
	p := r.next()
	t, err := r.dec.Token()
	if err != nil {
		return nil, r.syntaxError(err)
	}
	if d, ok := t.(json.Delim); ok && (d == '{' || d == '[') {
		if r.depth++; r.depth > MaxDepth {
			return nil, &Error{p, fmt.Sprintf("JSON nested deeper than %d levels", MaxDepth)}
		}
		defer func() { r.depth-- }()
	}
	var n ast.Node
	switch t {
	case json.Delim('{'):
		obj := &ast.ObjectType{Lbrace: p, List: &ast.ObjectList{}}
		for r.dec.More() {
			kp := r.next()
			k, err := r.dec.Token()
			if err != nil {
				return nil, r.syntaxError(err)
			}
			key, _ := k.(string)
			val, err := r.node()
			if err != nil {
				return nil, err
			}
			tok := token.Token{Type: token.STRING, Text: strconv.Quote(key), JSON: true, Pos: kp}
			obj.List.Add(&ast.ObjectItem{Keys: []*ast.ObjectKey{{Token: tok}}, Val: val})
		}
		n = obj
	case json.Delim('['):
		list := &ast.ListType{Lbrack: p}
		for r.dec.More() {
			val, err := r.node()
			if err != nil {
				return nil, err
			}
			list.Add(val)
		}
		n = list
	default: // Token never returns a closing delimiter where a value starts
		return &ast.LiteralType{Token: literal(t, p)}, nil
	}
	if err := r.skip(); err != nil { // the closing delimiter
		return nil, r.syntaxError(err)
	}
	return n, nil
}

func literal(v json.Token, p token.Pos) token.Token {
	switch v := v.(type) {
	case string:
		return token.Token{Type: token.STRING, Text: strconv.Quote(v), JSON: true, Pos: p}
	case bool:
		return token.Token{Type: token.BOOL, Text: strconv.FormatBool(v), Pos: p}
	case json.Number:
		if strings.ContainsAny(string(v), ".eE") {
			return token.Token{Type: token.FLOAT, Text: string(v), Pos: p}
		}
		return token.Token{Type: token.NUMBER, Text: string(v), Pos: p}
	}
	return token.Token{Type: token.ILLEGAL, Text: "null", Pos: p} // no field accepts null
}

// next returns the position of the token the decoder reads next.
func (r *reader) next() token.Pos {
	off := int(r.dec.InputOffset())
	for off < len(r.src) && strings.IndexByte(" \t\r\n,:", r.src[off]) >= 0 {
		off++
	}
	return r.pos(off)
}

func (r *reader) pos(off int) token.Pos {
	line := sort.SearchInts(r.lines, off+1) // lines[line-1] <= off < lines[line]
	col := utf8.RuneCount(r.src[r.lines[line-1]:off]) + 1
	return token.Pos{Filename: r.file, Offset: off, Line: line, Column: col}
}

func (r *reader) syntaxError(err error) error {
	off := len(r.src)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = min(int(se.Offset), len(r.src))
	} else if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = errors.New("unexpected end of JSON input")
	}
	return &Error{r.pos(off), err.Error()}
}
