package mesh

import (
	"github.com/vmesh/vmesh/discovery/httpapi"
	"github.com/vmesh/vmesh/mesh/cli"
)

// httpBuild is the build as /v1/agent/self shows it.
func httpBuild(b cli.BuildInfo) httpapi.BuildInfo {
	return httpapi.BuildInfo{Version: b.Version, Revision: b.Revision, ShortRevision: b.ShortRevision(),
		Modified: b.Modified, RevisionNote: b.RevisionNote, GoVersion: b.GoVersion}
}
