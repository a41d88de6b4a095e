package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Revision is the VCS commit vmesh was built from. Left empty, it is read
// from the build's own stamp (debug.ReadBuildInfo: vcs.revision and
// vcs.modified, which `go build` records in a git checkout); a release
// build that is made from an export without .git sets it with -ldflags
// "-X github.com/vmesh/vmesh/mesh/cli.Revision=<commit>".
var Revision = ""

// BuildInfo names a build: what `vmesh version`, the agent's banner,
// /v1/agent/self, /server_info and vmesh_build_info report.
type BuildInfo struct {
	Version string `json:"version"`
	// Revision is the full commit hash, or "unknown" (RevisionNote says
	// why).
	Revision string `json:"revision"`
	// Modified: the tree had uncommitted changes when it was built.
	Modified     bool   `json:"modified"`
	RevisionNote string `json:"revision_note,omitempty"`
	GoVersion    string `json:"go_version"`
	Platform     string `json:"platform"`
}

// Build reads this binary's build information.
func Build() BuildInfo {
	b := BuildInfo{Version: Version, Revision: Revision, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if b.Revision != "" {
		return b // set by the release build: the stamp may be absent or stale
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		b.Revision, b.RevisionNote = "unknown", "the binary carries no build information"
		return b
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	if b.Revision == "" {
		b.Revision, b.RevisionNote = "unknown", "built without VCS information (outside a git checkout, in a git worktree, with -buildvcs=false, or by go test/go run); release builds set it with -ldflags -X "+
			"github.com/vmesh/vmesh/mesh/cli.Revision=<commit>"
	}
	return b
}

// ShortRevision is the revision's first 12 characters, "+dirty" when the
// tree had changes.
func (b BuildInfo) ShortRevision() string {
	r := b.Revision
	if len(r) > 12 {
		r = r[:12]
	}
	if b.Modified {
		r += "+dirty"
	}
	return r
}

// String is the one-line form of the agent's banner and logs.
func (b BuildInfo) String() string {
	return fmt.Sprintf("%s (revision %s, %s)", b.Version, b.ShortRevision(), b.GoVersion)
}
