package acl

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

// jsonToAST reads JSON rules into the AST the HCL parser produces for the
// same rules, one ObjectItem per key, each node with its line. HCL's own
// JSON parser is not used: it drops positions, flattens nested objects
// and accepts malformed input such as a missing comma. (mesh/config does
// the same for agent files; acl imports nothing of vmesh, so it has its
// own copy.)
func jsonToAST(src []byte) (*ast.ObjectList, error) {
	r := &jsonReader{src: src, lines: []int{0}, dec: json.NewDecoder(bytes.NewReader(src))}
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
		return nil, fmt.Errorf("line %d: expected a JSON object, got %s", n.Pos().Line, describe(n))
	}
	if p := r.next(); !errors.Is(r.skip(), io.EOF) {
		return nil, fmt.Errorf("line %d: unexpected data after the JSON object", p.Line)
	}
	return obj.List, nil
}

type jsonReader struct {
	src   []byte
	lines []int // byte offset at which each line starts
	dec   *json.Decoder
	depth int
}

// maxDepth bounds nesting; rules nest three deep, and a deeper document is
// either a mistake or an attempt to exhaust the stack.
const maxDepth = 32

func (r *jsonReader) skip() error {
	_, err := r.dec.Token()
	return err
}

func (r *jsonReader) node() (ast.Node, error) {
	p := r.next()
	t, err := r.dec.Token()
	if err != nil {
		return nil, r.syntaxError(err)
	}
	if d, ok := t.(json.Delim); ok && (d == '{' || d == '[') {
		if r.depth++; r.depth > maxDepth {
			return nil, fmt.Errorf("line %d: JSON nested deeper than %d levels", p.Line, maxDepth)
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
		return &ast.LiteralType{Token: jsonLiteral(t, p)}, nil
	}
	if err := r.skip(); err != nil { // the closing delimiter
		return nil, r.syntaxError(err)
	}
	return n, nil
}

func jsonLiteral(v json.Token, p token.Pos) token.Token {
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

// next is the position of the token the decoder reads next.
func (r *jsonReader) next() token.Pos {
	off := int(r.dec.InputOffset())
	for off < len(r.src) && strings.IndexByte(" \t\r\n,:", r.src[off]) >= 0 {
		off++
	}
	return r.pos(off)
}

func (r *jsonReader) pos(off int) token.Pos {
	line := sort.SearchInts(r.lines, off+1) // lines[line-1] <= off < lines[line]
	col := utf8.RuneCount(r.src[r.lines[line-1]:off]) + 1
	return token.Pos{Offset: off, Line: line, Column: col}
}

func (r *jsonReader) syntaxError(err error) error {
	off := len(r.src)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = min(int(se.Offset), len(r.src))
	} else if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = errors.New("unexpected end of JSON input")
	}
	p := r.pos(off)
	return fmt.Errorf("line %d, column %d: %v", p.Line, p.Column, err)
}
