package proxy

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A file access log's path must be, cleaned, inside the access log
// directory: ".." and paths elsewhere are refused with both named.
func TestLogPathIn(t *testing.T) {
	for _, c := range []struct {
		dir, path, rel, err string
	}{
		{"/var/log/vmesh", "/var/log/vmesh/access.log", "access.log", ""},
		{"/var/log/vmesh/", "/var/log/vmesh/web/./access.log", "web/access.log", ""},
		{"/var/log/vmesh", "/var/log/vmesh/../../../etc/cron.d/x", "", `"/var/log/vmesh/../../../etc/cron.d/x" is not inside this host's access log directory /var/log/vmesh`},
		{"/var/log/vmesh", "/var/log/vmesh/web/../../vmesh2/a.log", "", "is not inside"},
		{"/var/log/vmesh", "/root/.ssh/authorized_keys", "", `"/root/.ssh/authorized_keys" is not inside this host's access log directory /var/log/vmesh`},
		{"/var/log/vmesh", "/var/log/vmeshx/a.log", "", "is not inside"},
		{"/var/log/vmesh", "/var/log/vmesh", "", "is not inside"},
		{"/var/log/vmesh", "/var/log/vmesh/..", "", "is not inside"},
		{"/var/log/vmesh", "access.log", "", "not an absolute path"},
		{"", "/var/log/vmesh/access.log", "", "this host sets no access log directory"},
	} {
		rel, err := logPathIn(c.dir, c.path)
		if c.err == "" {
			if err != nil || rel != c.rel {
				t.Errorf("logPathIn(%q, %q) = %q, %v; want %q", c.dir, c.path, rel, err, c.rel)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("logPathIn(%q, %q) = %q, %v; want an error with %q", c.dir, c.path, rel, err, c.err)
		}
	}
}

// openLog creates a file inside the directory 0640 and appends to it; it
// refuses a parent that is a symbolic link leading out, a symbolic link
// as the file, and a path outside — and leaves the target untouched.
// Both ways of opening are checked: openat2 and the EvalSymlinks
// fallback.
func TestOpenLogConfined(t *testing.T) {
	for name, open := range map[string]func(dir, rel string) (*os.File, error){"openat2": openBeneath, "fallback": openChecked} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			dir, outside := filepath.Join(root, "logs"), filepath.Join(root, "outside")
			if err := os.MkdirAll(filepath.Join(dir, "web"), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(outside, 0o700); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(outside, "target")
			if err := os.WriteFile(target, []byte("keep\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(os.Symlink(outside, filepath.Join(dir, "out")))     // a parent leading out
			must(os.Symlink(target, filepath.Join(dir, "link.log"))) // the file itself a link
			must(os.Symlink("web", filepath.Join(dir, "in")))        // a link that stays inside

			openLog := func(dir, path string) (*os.File, error) { return openLogWith(open, dir, path) }
			func() {
				// Inside: created 0640 (or less, with the umask), appended to.
				for _, p := range []string{filepath.Join(dir, "access.log"), filepath.Join(dir, "web", "access.log")} {
					for _, line := range []string{"a\n", "b\n"} {
						f, err := openLog(dir, p)
						if err != nil {
							t.Fatalf("openLog(%s): %v", p, err)
						}
						f.WriteString(line)
						f.Close()
					}
					b, _ := os.ReadFile(p)
					st, err := os.Stat(p)
					if err != nil || string(b) != "a\nb\n" || st.Mode().Perm()&^0o640 != 0 {
						t.Errorf("%s: %q, mode %v, %v", p, b, st.Mode(), err)
					}
				}
				for _, c := range []struct{ path, err string }{
					{filepath.Join(dir, "out", "target"), "leads out of the access log directory"},
					{filepath.Join(dir, "out", "new.log"), "leads out of the access log directory"},
					{filepath.Join(dir, "link.log"), "symbolic link"},
					{filepath.Join(dir, "..", "outside", "target"), "is not inside"},
					{target, "is not inside"},
				} {
					f, err := openLog(dir, c.path)
					if err == nil {
						f.Close()
						t.Errorf("openLog(%s) opened it", c.path)
						continue
					}
					if !strings.Contains(err.Error(), c.err) && !(name == "fallback" && c.err == "symbolic link" && strings.Contains(err.Error(), "too many levels of symbolic links")) {
						t.Errorf("openLog(%s): %v; want an error with %q", c.path, err, c.err)
					}
				}
				if b, _ := os.ReadFile(target); string(b) != "keep\n" {
					t.Errorf("the file outside was written: %q", b)
				}
				if _, err := os.Lstat(filepath.Join(outside, "new.log")); err == nil {
					t.Errorf("a file was created outside")
				}
			}()
			// A relative link that stays inside the directory is followed.
			p := filepath.Join(dir, "in", "via-link.log")
			f, err := openLog(dir, p)
			if err != nil {
				t.Fatalf("openLog(%s): %v", p, err)
			}
			f.Close()
			if _, err := os.Stat(filepath.Join(dir, "web", "via-link.log")); err != nil {
				t.Error(err)
			}
		})
	}
}

// openLog creates the directory when it is missing.
func TestOpenLogCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vmesh")
	f, err := openLog(dir, filepath.Join(dir, "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, err := os.Stat(dir); err != nil || !st.IsDir() || st.Mode().Perm()&^0o750 != 0 {
		t.Errorf("%s: %v, %v", dir, st, err)
	}
}

// A FIFO in the directory fails the open instead of blocking the sink.
func TestOpenLogRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "fifo.log")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err := openLog(dir, p); err == nil {
		f.Close()
		t.Fatal("a FIFO was opened")
	}
}
