package raft

import (
	"io/fs"
	"os"
	"path/filepath"

	hraft "github.com/hashicorp/raft"
)

// Raft's files hold the whole catalog, the CA key among it: only the agent
// may read them. raft-boltdb creates raft.db 0600, but FileSnapshotStore
// creates its directories 0755 and its files with os.Create (0666 less
// the umask), so every snapshot is tightened once written.

// privateSnapshots is a FileSnapshotStore whose snapshots are 0600 in
// 0700 directories.
type privateSnapshots struct {
	*hraft.FileSnapshotStore
	dir string
}

func (p privateSnapshots) Create(version hraft.SnapshotVersion, index, term uint64, conf hraft.Configuration,
	confIndex uint64, trans hraft.Transport) (hraft.SnapshotSink, error) {
	sink, err := p.FileSnapshotStore.Create(version, index, term, conf, confIndex, trans)
	if err != nil {
		return nil, err
	}
	return privateSink{SnapshotSink: sink, dir: p.dir}, nil
}

type privateSink struct {
	hraft.SnapshotSink
	dir string
}

func (k privateSink) Close() error {
	err := k.SnapshotSink.Close()
	if terr := tightenModes(k.dir); err == nil {
		err = terr
	}
	return err
}

// tightenModes makes raft.db and everything under snapshots/ readable by
// the owner only (directories 0700, files 0600).
func tightenModes(dir string) error {
	if err := os.Chmod(filepath.Join(dir, "raft.db"), 0o600); err != nil && !os.IsNotExist(err) {
		return err
	}
	return filepath.WalkDir(filepath.Join(dir, "snapshots"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // a snapshot reaped while we walk
			}
			return err
		}
		mode := fs.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		}
		if err := os.Chmod(path, mode); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	})
}
