package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The import rules of ARCHITECTURE.md. Patterns are package paths relative
// to the module: "raft" is that package alone, "raft/..." it and every
// package below it. Only non-test imports count, and only vmesh's own
// packages (plus the external ones named in depRules). A rule whose
// packages do not exist in this tree checks nothing, so rules may name
// packages before they are created.
//
// only lists every vmesh package the rule's packages may import (nothing
// when empty); a nil only leaves them free but for never.
var importRules = []struct {
	pkgs  string
	only  []string
	never []string
	why   string
}{
	{"acl", []string{"hcljson"}, nil, "the ACL model is a leaf: the HTTP API and the raft state both use it, so it can know neither"},
	{"hcljson", nothing, nil, "JSON read as HCL's syntax tree: a leaf the config decoder and the ACL rule parser share"},
	{"envoyfmt", nothing, nil, "Envoy's access-log format syntax: a leaf the config-entry validator and the proxy share, so they agree on what a format means"},
	{"discovery", []string{"acl", "envoyfmt"}, nil, "the catalog is the bottom layer (it stores the ACL model's tokens and policies); its sub-packages build on it, never the reverse"},
	{"discovery/...", []string{"discovery/...", "acl", "envoyfmt"}, nil, "discovery's HTTP API writes through an interface that raft implements and mesh wires in"},
	{"raft/...", []string{"discovery", "acl", "raft/..."}, nil, "the FSM writes the catalog; consensus knows nothing of HTTP, DNS, checks, the data plane or the host"},
	{"dataplane/xds/...", []string{"discovery", "dataplane/metrics", "dataplane/xds/..."}, nil, "the xDS translator reads the catalog and nothing else"},
	{"dataplane/proxy/...", []string{"dataplane/metrics", "envoyfmt", "dataplane/proxy/..."}, nil, "the proxy learns everything through xDS, so Envoy can replace it and it can run as its own process"},
	{"dataplane/metrics", nothing, nil, "a leaf the proxy may import"},
	{"dataplane/admin", []string{"dataplane/proxy"}, nil, "the admin listener reads the proxy's introspection and knows nothing of the catalog, raft or the agent"},
	{"iptables/...", []string{"iptables/..."}, nil, "capture takes its desired state as arguments"},
	{"systemd/...", []string{"systemd/..."}, nil, "service-manager glue knows nothing of the mesh"},
	{"telemetry", nothing, nil, "the OpenTelemetry pipeline: instrumented packages take the OpenTelemetry API's interfaces, and only mesh builds the pipeline"},
	{"lab/testkit", nothing, nil, "every package's tests may import it"},
	{"mesh/cli/...", nil, []string{"raft/...", "mesh"}, "commands talk to an agent over its HTTP API; they never open raft files or start an agent"},
	{"...", nil, []string{"lab/testkit"}, "test helpers stay out of the binary"},
}

// importedOnlyBy: only the listed packages may import pkg (non-test).
var importedOnlyBy = []struct {
	pkg string
	by  []string
	why string
}{
	{"mesh", []string{"", "mesh/e2e/..."}, "mesh is the composition root: only main wires it in, and end-to-end tests drive it"},
}

// depRules: the packages must not link dep, directly or through anything
// they import. A rule with ifExists set applies once that package exists
// (the package that is to carry the dependency instead).
var depRules = []struct {
	pkgs, dep, ifExists, why string
}{
	{"raft/...", "github.com/miekg/dns", "discovery/dns", "DNS serving lives in discovery/dns, which only the agent links"},
	{"dataplane/xds/...", "github.com/miekg/dns", "discovery/dns", "DNS serving lives in discovery/dns, which only the agent links"},
}

var nothing = []string{}

const module = "github.com/vmesh/vmesh"

type listedPackage struct {
	ImportPath     string
	Dir            string
	Name           string
	GoFiles        []string
	CgoFiles       []string
	IgnoredGoFiles []string
	Imports        []string
	Deps           []string
}

// rel is path relative to the module ("" for the module root), ok false
// when path is not vmesh's.
func rel(path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

// match reports whether the relative package path p matches pattern.
func match(pattern, p string) bool {
	switch {
	case pattern == "...":
		return true
	case strings.HasSuffix(pattern, "/..."):
		base := strings.TrimSuffix(pattern, "/...")
		return p == base || strings.HasPrefix(p, base+"/")
	default:
		return p == pattern
	}
}

func matchAny(patterns []string, p string) bool {
	return slices.ContainsFunc(patterns, func(pat string) bool { return match(pat, p) })
}

// listPackages runs go list over the module; it is how the go command
// itself sees the tree, build constraints included.
func listPackages(t *testing.T) []listedPackage {
	t.Helper()
	// go test caches a result by the files the test itself opened, not
	// those go list read. Reading every directory of the module makes any
	// added, removed or changed file there invalidate the cached result.
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the module's directories: %v", err)
	}
	cmd := exec.Command("go", "list", "-json", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

// TestArchImports fails when a package imports what ARCHITECTURE.md's
// import rules forbid.
func TestArchImports(t *testing.T) {
	pkgs := listPackages(t)
	exists := map[string]bool{}
	for _, p := range pkgs {
		r, _ := rel(p.ImportPath)
		exists[r] = true
	}
	for _, p := range pkgs {
		from, _ := rel(p.ImportPath)
		for _, imp := range p.Imports {
			to, ours := rel(imp)
			if !ours {
				continue
			}
			for _, r := range importRules {
				if !match(r.pkgs, from) {
					continue
				}
				if r.only != nil && !matchAny(r.only, to) {
					t.Errorf("%s imports %s; %s may import only %v of vmesh: %s", show(from), show(to), r.pkgs, r.only, r.why)
				}
				if matchAny(r.never, to) {
					t.Errorf("%s imports %s; %s must never import %v: %s", show(from), show(to), r.pkgs, r.never, r.why)
				}
			}
			for _, r := range importedOnlyBy {
				if to == r.pkg && !matchAny(r.by, from) {
					t.Errorf("%s imports %s; only %v may: %s", show(from), show(to), r.by, r.why)
				}
			}
		}
		for _, r := range depRules {
			if !match(r.pkgs, from) || (r.ifExists != "" && !exists[r.ifExists]) {
				continue
			}
			if slices.Contains(p.Deps, r.dep) {
				t.Errorf("%s depends on %s (through its imports; see go list -deps %s): %s", show(from), r.dep, p.ImportPath, r.why)
			}
		}
	}
}

func show(rel string) string {
	if rel == "" {
		return "the module root (main)"
	}
	return rel
}

// TestDocFiles: every package directory with non-test Go files has a
// doc.go whose package comment says what the package owns and must not do.
func TestDocFiles(t *testing.T) {
	for _, p := range listPackages(t) {
		var files []string
		for _, f := range slices.Concat(p.GoFiles, p.CgoFiles, p.IgnoredGoFiles) {
			if !strings.HasSuffix(f, "_test.go") {
				files = append(files, f)
			}
		}
		if len(files) == 0 {
			continue
		}
		path := filepath.Join(p.Dir, "doc.go")
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s has no doc.go", p.ImportPath)
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		doc := strings.TrimSpace(f.Doc.Text())
		switch {
		case doc == "":
			t.Errorf("%s has no package comment", path)
		case p.Name != "main" && !strings.HasPrefix(doc, "Package "+p.Name+" "):
			t.Errorf("%s: the package comment starts %q, want \"Package %s ...\"", path, firstLine(doc), p.Name)
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
