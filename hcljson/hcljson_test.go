package hcljson

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/hcl/ast"
)

// TestParse: keys and nested objects keep their positions; malformed,
// trailing, non-object and too deep documents are errors at a position.
func TestParse(t *testing.T) {
	list, err := Parse("f.json", []byte("{\n  \"a\": {\"b\": [1, \"x\"]},\n  \"c\": true\n}"))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 || list.Items[1].Keys[0].Token.Pos.Line != 3 {
		t.Fatalf("items %+v; want a and c, c on line 3", list.Items)
	}
	inner, ok := list.Items[0].Val.(*ast.ObjectType)
	if !ok || inner.List.Items[0].Keys[0].Token.Pos.Column != 9 {
		t.Errorf("a's value %T; want an object whose key b is at column 9", list.Items[0].Val)
	}
	for src, want := range map[string]string{
		`{"a": 1 "b": 2}`: "f.json:1:9",
		`{"a": 1} x`:      "unexpected data after the top-level object",
		`[1]`:             "expected a JSON object at the top level, got a list",
		`{"a":`:           "unexpected end of JSON input",
		strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1): "nested deeper than",
	} {
		if _, err := Parse("f.json", []byte(src)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40s: %v; want an error with %q", src, err, want)
		}
	}
}
