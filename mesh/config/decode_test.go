package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

type testCheck struct {
	HTTP     string              `hcl:"http"`
	TCP      string              `hcl:"tcp"`
	TTL      time.Duration       `hcl:"ttl"`
	Interval time.Duration       `hcl:"interval"`
	Header   map[string][]string `hcl:"header"`
}

type testService struct {
	Name   string            `hcl:"name"`
	ID     string            `hcl:"id"`
	Port   int               `hcl:"port"`
	Tags   []string          `hcl:"tags"`
	Meta   map[string]string `hcl:"meta"`
	Check  *testCheck        `hcl:"check"`
	Checks []testCheck       `hcl:"checks"`
}

type testFile struct {
	Service  *testService  `hcl:"service"`
	Services []testService `hcl:"services"`
	NodeName string        `hcl:"node_name"`
	Ports    struct {
		HTTP uint16 `hcl:"http"`
	} `hcl:"ports"`
	Weights  []int        `hcl:"weights"`
	Ratio    float64      `hcl:"ratio"`
	Debug    bool         `hcl:"debug"`
	Big      uint64       `hcl:"big"`
	Small    int8         `hcl:"small"`
	internal string       `hcl:"internal"`
	Ignored  string       `hcl:"-"`
	Untagged string       // not decodable
	Ptrs     []*testCheck `hcl:"ptrs"`
}

const exampleHCL = `
service {
  name = "web"
  id   = "web-1"
  port = 8080
  tags = ["v1", "primary"]
  meta = { version = "1" }
  check {
    http     = "http://127.0.0.1:8080/health"
    interval = "10s"
    header   = { X-Token = "t", Accept = ["a", "b"] }
  }
  checks = [
    { tcp = "127.0.0.1:8080", interval = "5s" },
    { ttl = "30s" },
  ]
  checks { ttl = "1m" }
}
services = [ { name = "a", port = 1 }, { name = "b", port = 2 } ]
services { name = "c" }
NodeName = "n1"
ports = { http = 65535 }
`

const exampleJSON = `{
  "service": {
    "name": "web", "id": "web-1", "port": 8080,
    "tags": ["v1", "primary"],
    "meta": {"version": "1"},
    "check": {"http": "http://127.0.0.1:8080/health", "interval": "10s",
              "header": {"X-Token": "t", "Accept": ["a", "b"]}},
    "checks": [{"tcp": "127.0.0.1:8080", "interval": "5s"}, {"ttl": "30s"}, {"ttl": "1m"}]
  },
  "services": [{"name": "a", "port": 1}, {"name": "b", "port": 2}, {"name": "c"}],
  "nodename": "n1",
  "ports": {"http": 65535}
}`

func TestDecodeHCLExampleHCLAndJSON(t *testing.T) {
	want := testFile{
		Service: &testService{
			Name: "web", ID: "web-1", Port: 8080,
			Tags: []string{"v1", "primary"},
			Meta: map[string]string{"version": "1"},
			Check: &testCheck{
				HTTP: "http://127.0.0.1:8080/health", Interval: 10 * time.Second,
				Header: map[string][]string{"X-Token": {"t"}, "Accept": {"a", "b"}},
			},
			Checks: []testCheck{
				{TCP: "127.0.0.1:8080", Interval: 5 * time.Second},
				{TTL: 30 * time.Second},
				{TTL: time.Minute},
			},
		},
		Services: []testService{{Name: "a", Port: 1}, {Name: "b", Port: 2}, {Name: "c"}},
		NodeName: "n1",
	}
	want.Ports.HTTP = 65535
	for _, tc := range []struct{ syntax, src string }{{"hcl", exampleHCL}, {"json", exampleJSON}} {
		t.Run(tc.syntax, func(t *testing.T) {
			var got testFile
			if err := Decode("svc."+tc.syntax, []byte(tc.src), tc.syntax, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

// HCL's own json/parser flattens objects whose values are all objects, and
// lists of such objects; make sure structure survives.
func TestDecodeHCLJSONNestedObjects(t *testing.T) {
	src := `{"service": {"check": {"http": "x"}, "meta": {"a": "b"}},
	         "services": [{"check": {"ttl": "1s"}}, {"check": {"ttl": "2s"}}],
	         "ptrs": [{"tcp": "a"}, {"tcp": "b"}], "weights": [1, 2e1], "ratio": 0.5, "debug": true}`
	var got testFile
	if err := Decode("f.json", []byte(src), "json", &got); err != nil {
		t.Fatal(err)
	}
	if got.Service.Check.HTTP != "x" || got.Service.Meta["a"] != "b" {
		t.Errorf("service = %+v", got.Service)
	}
	if len(got.Services) != 2 || got.Services[1].Check.TTL != 2*time.Second {
		t.Errorf("services = %+v", got.Services)
	}
	if len(got.Ptrs) != 2 || got.Ptrs[1].TCP != "b" {
		t.Errorf("ptrs = %+v", got.Ptrs)
	}
	if !reflect.DeepEqual(got.Weights, []int{1, 20}) || got.Ratio != 0.5 || !got.Debug {
		t.Errorf("weights=%v ratio=%v debug=%v", got.Weights, got.Ratio, got.Debug)
	}
}

func TestDecodeHCLKeyStyles(t *testing.T) {
	for _, key := range []string{"node_name", "NodeName", "nodename", "NODE_NAME", `"node_name"`} {
		var got testFile
		if err := Decode("k.hcl", []byte(key+` = "x"`), "hcl", &got); err != nil || got.NodeName != "x" {
			t.Errorf("%s: got %q, err %v", key, got.NodeName, err)
		}
	}
}

func TestDecodeHCLErrors(t *testing.T) {
	tests := []struct {
		name, file, src string
		want            []string // each must appear in the error
	}{
		{"unknown key", "bad.hcl", "service {\n  name = \"web\"\n  foo = 1\n}\n",
			[]string{`bad.hcl:3:3: unknown key "foo" in service`}},
		{"two unknown keys", "bad.hcl", "foo = 1\nservice {\n  check { bar = \"x\" }\n}\n",
			[]string{`bad.hcl:1:1: unknown key "foo" in top level`, `bad.hcl:3:11: unknown key "bar" in service.check`}},
		{"unexported and untagged fields are not keys", "bad.hcl", "internal = \"x\"\nuntagged = \"y\"\nignored = \"z\"\n",
			[]string{`:1:1: unknown key "internal"`, `:2:1: unknown key "untagged"`, `:3:1: unknown key "ignored"`}},
		{"type mismatch", "file.hcl", "service {\n  name = \"w\"\n  port = \"8080\"\n}\n",
			[]string{"file.hcl:3:10: service.port: expected a number, got a string"}},
		{"list element mismatch", "f.hcl", `service { tags = ["a", 1] }`,
			[]string{"f.hcl:1:24: service.tags: expected a string, got a number"}},
		{"object for string", "f.hcl", `node_name { a = 1 }`,
			[]string{"f.hcl:1:11: node_name: expected a string, got an object"}},
		{"port overflow", "p.hcl", "ports {\n  http = 70000\n}\n",
			[]string{"p.hcl:2:10: ports.http: 70000 is out of range for uint16"}},
		{"negative into uint", "p.hcl", "ports { http = -1 }",
			[]string{"ports.http: -1 is out of range for uint16"}},
		{"int8 overflow", "p.hcl", "small = 128", []string{"small: 128 is out of range for int8"}},
		{"beyond int64", "p.hcl", "big = 99999999999999999999999", []string{"big: 99999999999999999999999 is out of range for uint64"}},
		{"fraction into int", "p.hcl", "service { port = 80.5 }",
			[]string{"p.hcl:1:18: service.port: expected an integer, got 80.5"}},
		{"duration parse error", "d.hcl", "service {\n  check {\n    interval = \"ten\"\n  }\n}\n",
			[]string{`d.hcl:3:16: service.check.interval: time: invalid duration "ten"`}},
		{"duration as number", "d.hcl", "service { check { ttl = 30 } }",
			[]string{`d.hcl:1:25: service.check.ttl: expected a duration string such as "10s", got a number`}},
		{"duplicate struct block", "dup.hcl", "service {\n  name = \"a\"\n}\nservice = {\n  name = \"b\"\n}\n",
			[]string{`dup.hcl:4:1: duplicate key "service" in top level (first set at line 1)`}},
		{"duplicate scalar", "dup.hcl", "service {\n  port = 1\n  port = 2\n}\n",
			[]string{`dup.hcl:3:3: duplicate key "port" in service (first set at line 2)`}},
		{"labels", "l.hcl", "service \"web\" {\n  name = \"web\"\n}\n",
			[]string{`l.hcl:1:9: labels are not supported`}},
		{"string for struct slice", "s.hcl", `services = "x"`,
			[]string{"s.hcl:1:12: services: expected a list, got a string"}},
		{"hcl syntax error", "syn.hcl", "service {\n  name = \"web\n}\n",
			[]string{"syn.hcl:", "literal not terminated"}},
		{"hcl missing brace", "syn.hcl", "service {\n  name = \"web\"\n",
			[]string{"syn.hcl:3:", "RBRACE"}},
		{"json unknown key and mismatch", "bad.json", "{\n  \"service\": {\n    \"nmae\": \"web\",\n    \"port\": \"80\"\n  }\n}",
			[]string{`bad.json:3:5: unknown key "nmae" in service`, "bad.json:4:13: service.port: expected a number, got a string"}},
		{"json null", "n.json", `{"node_name": null}`,
			[]string{"n.json:1:15: node_name: expected a string, got null"}},
		{"json syntax error", "syn.json", "{\n  \"service\": {\n    \"name\": \"web\"\n    \"port\": 1\n  }\n}",
			[]string{"syn.json:4:5: invalid character"}},
		{"json trailing comma", "syn.json", "{\"a\": 1,\n}", []string{"syn.json:2:1: invalid character '}'"}},
		{"json truncated", "syn.json", "{\"service\": {", []string{"syn.json:1:14: unexpected end of JSON input"}},
		{"json trailing data", "syn.json", "{}\n{}", []string{"syn.json:2:1: unexpected data after the top-level object"}},
		{"json not an object", "syn.json", "\n[1]", []string{"syn.json:2:1: expected a JSON object at the top level, got a list"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out testFile
			err := Decode(tc.file, []byte(tc.src), strings.TrimPrefix(filepath.Ext(tc.file), "."), &out)
			if err == nil {
				t.Fatal("expected an error")
			}
			if out.internal != "" {
				t.Errorf("unexported field set to %q", out.internal)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestDecodeHCLReportsAllProblems(t *testing.T) {
	src := "a = 1\nservice {\n  port = \"x\"\n  b = 2\n}\nports { http = 1e9 }\n"
	err := Decode("many.hcl", []byte(src), "hcl", &testFile{})
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 4 {
		t.Fatalf("want 4 joined errors, got %v", err)
	}
	for i, line := range []string{"many.hcl:1:", "many.hcl:3:", "many.hcl:4:", "many.hcl:6:"} {
		if got := joined.Unwrap()[i].Error(); !strings.HasPrefix(got, line) {
			t.Errorf("error %d = %q, want prefix %q", i, got, line)
		}
	}
}

func TestDecodeHCLMergeFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	first := write("a.hcl", `
node_name = "one"
ports { http = 1 }
service {
  name = "web"
  port = 80
  tags = ["a"]
  meta = { x = "1", y = "1" }
  check { http = "http://h/1" }
}
services { name = "s1" }
`)
	second := write("b.json", `{
  "node_name": "two",
  "service": {"port": 81, "tags": ["b"], "meta": {"y": "2"}, "check": {"interval": "3s"}},
  "services": [{"name": "s2"}]
}`)
	var got testFile
	for _, p := range []string{first, second} {
		if err := DecodeFile(p, &got); err != nil {
			t.Fatal(err)
		}
	}
	want := testFile{
		NodeName: "two",
		Service: &testService{
			Name: "web", Port: 81, Tags: []string{"a", "b"},
			Meta:  map[string]string{"x": "1", "y": "2"},
			Check: &testCheck{HTTP: "http://h/1", Interval: 3 * time.Second},
		},
		Services: []testService{{Name: "s1"}, {Name: "s2"}},
	}
	want.Ports.HTTP = 1
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestDecodeHCLFileErrors(t *testing.T) {
	dir := t.TempDir()
	yaml := filepath.Join(dir, "svc.yaml")
	if err := os.WriteFile(yaml, []byte("a: 1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := DecodeFile(yaml, &testFile{}); err == nil || !strings.Contains(err.Error(), yaml) {
		t.Errorf("yaml: got %v, want an error naming %s", err, yaml)
	}
	missing := filepath.Join(dir, "missing.hcl")
	if err := DecodeFile(missing, &testFile{}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing: got %v", err)
	}
	var notPtr testFile
	if err := Decode("x.hcl", nil, "hcl", notPtr); err == nil {
		t.Error("non-pointer out: want an error")
	}
	if err := Decode("x.toml", nil, "toml", &notPtr); err == nil {
		t.Error("unknown syntax: want an error")
	}
}

// TestDecodeEmptyFile: an empty or blank file sets nothing, JSON as HCL;
// a JSON file that is not empty must still be a whole object.
func TestDecodeEmptyFile(t *testing.T) {
	for _, tc := range []struct{ syntax, src string }{{"json", ""}, {"json", " \n\t"}, {"hcl", ""}} {
		got := testService{Name: "kept"}
		if err := Decode("empty."+tc.syntax, []byte(tc.src), tc.syntax, &got); err != nil || got.Name != "kept" {
			t.Errorf("%s %q: %+v, %v; want nothing changed and no error", tc.syntax, tc.src, got, err)
		}
	}
	var got testService
	if err := Decode("bad.json", []byte("{"), "json", &got); err == nil {
		t.Error(`"{" decoded without an error`)
	}
}
