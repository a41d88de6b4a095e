package raft

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	hraft "github.com/hashicorp/raft"
)

// A snapshot archive is Consul's layout: a gzip'd tar of meta.json (raft's
// SnapshotMeta), state.bin (the FSM's snapshot stream, fsm.go's vmesh
// format, not Consul's) and SHA256SUMS (sha256sum's format, for both).
// `consul snapshot inspect` reads its metadata; only vmesh restores it.

// ErrBadArchive: an archive that is not a vmesh snapshot, is damaged, or
// holds a state the FSM cannot restore.
var ErrBadArchive = errors.New("raft: bad snapshot archive")

// maxArchiveState bounds state.bin when reading an archive (gzip can
// inflate a small body a lot).
const maxArchiveState = 1 << 30

func writeArchive(w io.Writer, meta *hraft.SnapshotMeta, state io.Reader) error {
	var buf bytes.Buffer
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(&buf, sum), state); err != nil {
		return fmt.Errorf("reading snapshot: %w", err)
	}
	m := *meta
	m.Size = int64(buf.Len())
	metaJSON, err := json.Marshal(&m)
	if err != nil {
		return err
	}
	metaSum := sha256.Sum256(metaJSON)
	sums := fmt.Sprintf("%x  meta.json\n%x  state.bin\n", metaSum, sum.Sum(nil))
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	now := time.Now()
	for _, f := range []struct {
		name string
		data []byte
	}{{"meta.json", metaJSON}, {"state.bin", buf.Bytes()}, {"SHA256SUMS", []byte(sums)}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o600, Size: int64(len(f.data)), ModTime: now}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// readArchive reads and checks an archive: the three files, their
// checksums, and the metadata.
func readArchive(r io.Reader) (*hraft.SnapshotMeta, []byte, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadArchive, fmt.Sprintf(format, args...))
	}
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, nil, bad("not gzip: %v", err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, bad("reading tar: %v", err)
		}
		switch h.Name {
		case "meta.json", "state.bin", "SHA256SUMS":
		default:
			return nil, nil, bad("unexpected file %q", h.Name)
		}
		data, err := io.ReadAll(io.LimitReader(tr, maxArchiveState+1))
		if err != nil {
			return nil, nil, bad("reading %s: %v", h.Name, err)
		}
		if len(data) > maxArchiveState {
			return nil, nil, bad("%s is larger than %d bytes", h.Name, maxArchiveState)
		}
		files[h.Name] = data
	}
	for _, name := range []string{"meta.json", "state.bin", "SHA256SUMS"} {
		if _, ok := files[name]; !ok {
			return nil, nil, bad("%s is missing", name)
		}
	}
	want := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(files["SHA256SUMS"]))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			return nil, nil, bad("SHA256SUMS: line %q is not 'SUM  NAME'", sc.Text())
		}
		want[name] = sum
	}
	for _, name := range []string{"meta.json", "state.bin"} {
		got := sha256.Sum256(files[name])
		if want[name] != hex.EncodeToString(got[:]) {
			return nil, nil, bad("%s does not match its checksum in SHA256SUMS", name)
		}
	}
	var meta hraft.SnapshotMeta
	if err := json.Unmarshal(files["meta.json"], &meta); err != nil {
		return nil, nil, bad("meta.json: %v", err)
	}
	if meta.Size != int64(len(files["state.bin"])) {
		return nil, nil, bad("meta.json says state.bin has %d bytes, it has %d", meta.Size, len(files["state.bin"]))
	}
	return &meta, files["state.bin"], nil
}
