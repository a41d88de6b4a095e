package config

import (
	"bytes"
	"cmp"
	"encoding"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/hcl/ast"
	hclparser "github.com/hashicorp/hcl/hcl/parser"
	"github.com/hashicorp/hcl/hcl/token"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/hcljson"
)

// DecodeFile reads path, picks the syntax by extension (".hcl" or
// ".json") and decodes strictly into out, a non-nil pointer to struct.
// Fields the file does not mention are left as they are, so decoding several
// files in order merges them: later files override scalar fields, slices are
// appended to and maps are merged key by key. On error out may be partly
// updated.
//
// Why this exists: Consul's agent and service files use HCL v1 semantics,
// where `check { ... }` and `check = { ... }` mean the same and repeated
// blocks form a list, so we parse with the HCL v1 parser. hcl.Decode,
// however, ignores unknown keys and loses positions, and we want every
// problem in a file reported at once as file:line:col. So we walk the AST
// ourselves. JSON is turned into the same AST with encoding/json instead of
// HCL's json/parser, because that parser drops token positions, flattens
// nested objects and lists of objects (losing where an element ends) and
// silently accepts malformed input such as a missing comma.
func DecodeFile(path string, out any) error {
	syntax := strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")
	if syntax != "hcl" && syntax != "json" {
		return fmt.Errorf("%s: unsupported config file extension (want .hcl or .json)", path)
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return Decode(path, src, syntax, out)
}

// Decode is DecodeFile on bytes; filename is used in messages
// only and syntax is "hcl" or "json".
func Decode(filename string, src []byte, syntax string, out any) error {
	rv := reflect.ValueOf(out)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("%s: decode target must be a non-nil pointer to a struct, got %T", filename, out)
	}
	if len(bytes.TrimSpace(src)) == 0 && (syntax == "hcl" || syntax == "json") {
		// An empty file sets nothing, in JSON as in HCL (Consul accepts
		// both; config management often leaves one behind).
		return nil
	}
	var list *ast.ObjectList
	switch syntax {
	case "hcl":
		f, err := hclparser.Parse(src)
		if err != nil {
			var pe *hclparser.PosError
			if errors.As(err, &pe) {
				pe.Pos.Filename = filename
				return fmt.Errorf("%s: %w", pe.Pos, pe.Err)
			}
			return fmt.Errorf("%s: %w", filename, err)
		}
		list, _ = f.Node.(*ast.ObjectList)
	case "json":
		var err error
		if list, err = hcljson.Parse(filename, src); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s: unknown config syntax %q (want hcl or json)", filename, syntax)
	}
	d := &decoder{file: filename}
	if list != nil {
		d.structure("", list, rv.Elem(), 1, nil)
	}
	return errors.Join(d.errs...)
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// decoder collects every problem found while walking one file.
type decoder struct {
	file string
	errs []error
}

func (d *decoder) errorf(pos token.Pos, format string, args ...any) {
	pos.Filename = d.file
	d.errs = append(d.errs, fmt.Errorf("%s: %s", pos, fmt.Sprintf(format, args...)))
}

func (d *decoder) mismatch(path string, n ast.Node, want string) {
	d.errorf(n.Pos(), "%s: expected %s, got %s", path, want, hcljson.Describe(n))
}

// structure decodes the items of an object or block into the struct v. An
// int field tagged `hcl:",line"` receives the line the object starts on, so
// that checks made after decoding can still name file and line.
//
// only, from the tag option `only=a|b` of the field that holds v, narrows
// the keys to those listed, each naming a field by its Go name whatever its
// own tag says: one struct can then serve as a whole block in one place and
// as a block of a few keys in another (a service, and the sidecar_service
// of its connect block).
func (d *decoder) structure(path string, list *ast.ObjectList, v reflect.Value, line int, only []string) {
	t, where := v.Type(), cmp.Or(path, "top level")
	fields, names := map[string]int{}, map[int]string{}
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("hcl") == ",line" && v.Field(i).CanInt() {
			v.Field(i).SetInt(int64(line))
			continue
		}
		name := tagName(t.Field(i))
		if only != nil {
			name = ""
			for _, k := range only {
				if t.Field(i).IsExported() && normalizeKey(k) == normalizeKey(t.Field(i).Name) {
					name = k
				}
			}
		}
		if name != "" {
			fields[normalizeKey(name)] = i
			names[i] = name
		}
	}
	seen := map[int]token.Pos{}
	for _, item := range list.Items {
		key, ok := d.key(path, item)
		if !ok {
			continue
		}
		i, ok := fields[normalizeKey(key)]
		if !ok {
			d.errorf(item.Keys[0].Pos(), "unknown key %q in %s", key, where)
			continue
		}
		f := v.Field(i)
		if k := f.Kind(); k != reflect.Slice && k != reflect.Map {
			if first, dup := seen[i]; dup {
				d.errorf(item.Keys[0].Pos(), "duplicate key %q in %s (first set at line %d)", key, where, first.Line)
				continue
			}
			seen[i] = item.Keys[0].Pos()
		}
		d.value(strings.TrimPrefix(path+"."+names[i], "."), item.Val, f, tagOnly(t.Field(i)))
	}
}

// value decodes node n into the settable value v; only is structure's.
func (d *decoder) value(path string, n ast.Node, v reflect.Value, only []string) {
	t := v.Type()
	switch {
	case t == reflect.TypeFor[time.Duration]() || t == reflect.TypeFor[discovery.Duration]():
		if s, ok := d.str(path, n, `a duration string such as "10s"`); ok {
			dur, err := time.ParseDuration(s)
			if err != nil {
				d.errorf(n.Pos(), "%s: %v", path, err)
				return
			}
			v.SetInt(int64(dur))
		}
	case reflect.PointerTo(t).Implements(textUnmarshalerType) && v.CanAddr():
		// Types from other packages parse themselves.
		if s, ok := d.str(path, n, "a string"); ok {
			if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
				d.errorf(n.Pos(), "%s: %v", path, err)
			}
		}
	case t.Kind() == reflect.String:
		if s, ok := d.str(path, n, "a string"); ok {
			v.SetString(s)
		}
	case t.Kind() == reflect.Bool:
		if lit := d.literal(path, n, "a bool", token.BOOL); lit != nil {
			v.SetBool(lit.Token.Text == "true")
		}
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Bool:
		// A bool whose absence means "the default" (acl.enabled).
		if lit := d.literal(path, n, "a bool", token.BOOL); lit != nil {
			b := lit.Token.Text == "true"
			v.Set(reflect.ValueOf(&b))
		}
	case v.CanInt() || v.CanUint() || v.CanFloat():
		d.number(path, n, v)
	case t.Kind() == reflect.Struct:
		if obj := d.object(path, n); obj != nil {
			d.structure(path, obj.List, v, obj.Lbrace.Line, only)
		}
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		if obj := d.object(path, n); obj != nil {
			if v.IsNil() {
				v.Set(reflect.New(t.Elem()))
			}
			d.structure(path, obj.List, v.Elem(), obj.Lbrace.Line, only)
		}
	case t.Kind() == reflect.Slice:
		d.slice(path, n, v, only)
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String:
		d.mapping(path, n, v)
	default:
		d.errorf(n.Pos(), "%s: unsupported field type %s", path, t)
	}
}

// number parses NUMBER and FLOAT tokens exactly and range-checks them; a
// whole float such as JSON's 1e3 is accepted for an integer field.
func (d *decoder) number(path string, n ast.Node, v reflect.Value) {
	lit := d.literal(path, n, "a number", token.NUMBER, token.FLOAT)
	if lit == nil {
		return
	}
	text := lit.Token.Text
	f, _, err := big.ParseFloat(text, 0, 256, big.ToNearestEven)
	var inRange bool
	switch {
	case err != nil:
		d.errorf(n.Pos(), "%s: invalid number %s", path, text)
		return
	case v.CanFloat():
		x, _ := f.Float64()
		if inRange = !math.IsInf(x, 0) && !v.OverflowFloat(x); inRange {
			v.SetFloat(x)
		}
	case !f.IsInt():
		d.errorf(n.Pos(), "%s: expected an integer, got %s", path, text)
		return
	case v.CanUint():
		u, acc := f.Uint64()
		if inRange = acc == big.Exact && !v.OverflowUint(u); inRange {
			v.SetUint(u)
		}
	default:
		i, acc := f.Int64()
		if inRange = acc == big.Exact && !v.OverflowInt(i); inRange {
			v.SetInt(i)
		}
	}
	if !inRange {
		d.errorf(n.Pos(), "%s: %s is out of range for %s", path, text, v.Kind())
	}
}

// slice appends to v: each element of a list, or a single object when the
// elements are structs (repeated blocks arrive as repeated keys).
func (d *decoder) slice(path string, n ast.Node, v reflect.Value, only []string) {
	et := v.Type().Elem()
	elems := []ast.Node{n}
	if list, ok := n.(*ast.ListType); ok {
		elems = list.List
	} else if _, ok := n.(*ast.ObjectType); !ok || (et.Kind() != reflect.Struct &&
		(et.Kind() != reflect.Pointer || et.Elem().Kind() != reflect.Struct)) {
		d.mismatch(path, n, "a list")
		return
	}
	for _, e := range elems {
		ev := reflect.New(et).Elem()
		before := len(d.errs)
		d.value(path, e, ev, only)
		if len(d.errs) == before {
			v.Set(reflect.Append(v, ev))
		}
	}
}

// mapping sets one map entry per key of an object; for slice-valued maps a
// single value stands for a one-element list.
func (d *decoder) mapping(path string, n ast.Node, v reflect.Value) {
	obj := d.object(path, n)
	if obj == nil {
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for _, item := range obj.List.Items {
		key, ok := d.key(path, item)
		if !ok {
			continue
		}
		val := item.Val
		if lit, ok := val.(*ast.LiteralType); ok && v.Type().Elem().Kind() == reflect.Slice {
			val = &ast.ListType{Lbrack: lit.Pos(), List: []ast.Node{lit}}
		}
		ev := reflect.New(v.Type().Elem()).Elem()
		before := len(d.errs)
		d.value(path+"."+key, val, ev, nil)
		if len(d.errs) == before {
			v.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), ev)
		}
	}
}

// key returns the single key of item; HCL v1 gives labelled blocks such as
// `service "web" { }` several keys, which we do not support.
func (d *decoder) key(path string, item *ast.ObjectItem) (string, bool) {
	if len(item.Keys) != 1 {
		if len(item.Keys) > 1 {
			d.errorf(item.Keys[1].Pos(), "labels are not supported (%s %s { ... } in %s)",
				item.Keys[0].Token.Text, item.Keys[1].Token.Text, cmp.Or(path, "top level"))
		}
		return "", false
	}
	s, err := tokenText(item.Keys[0].Token)
	if err != nil {
		d.errorf(item.Keys[0].Pos(), "%v", err)
		return "", false
	}
	return s, true
}

func (d *decoder) str(path string, n ast.Node, want string) (string, bool) {
	lit := d.literal(path, n, want, token.STRING, token.HEREDOC)
	if lit == nil {
		return "", false
	}
	s, err := tokenText(lit.Token)
	if err != nil {
		d.errorf(n.Pos(), "%s: %v", path, err)
		return "", false
	}
	return s, true
}

func (d *decoder) literal(path string, n ast.Node, want string, types ...token.Type) *ast.LiteralType {
	if lit, ok := n.(*ast.LiteralType); ok && slices.Contains(types, lit.Token.Type) {
		return lit
	}
	d.mismatch(path, n, want)
	return nil
}

func (d *decoder) object(path string, n ast.Node) *ast.ObjectType {
	obj, ok := n.(*ast.ObjectType)
	if !ok {
		d.mismatch(path, n, "an object")
	}
	return obj
}

// tokenText is Token.Value for strings, heredocs and identifiers, which
// panics on input the parser should already have rejected.
func tokenText(t token.Token) (s string, err error) {
	defer func() {
		if recover() != nil {
			err = fmt.Errorf("invalid string %s", t.Text)
		}
	}()
	s, _ = t.Value().(string)
	return s, nil
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("hcl"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	return name
}

// tagOnly is the `only=a|b` option of f's hcl tag, or nil.
func tagOnly(f reflect.StructField) []string {
	_, opts, _ := strings.Cut(f.Tag.Get("hcl"), ",")
	for _, o := range strings.Split(opts, ",") {
		if keys, ok := strings.CutPrefix(o, "only="); ok {
			return strings.Split(keys, "|")
		}
	}
	return nil
}

// normalizeKey makes node_name, NodeName and nodename the same key.
func normalizeKey(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
