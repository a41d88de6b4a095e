package proxy

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// openBeneath opens rel (relative, cleaned) beneath dir with openat2:
// RESOLVE_BENEATH refuses "..", absolute symbolic links and any link
// that leads out of dir while the path is resolved, O_NOFOLLOW refuses a
// link as the file itself. On a kernel without openat2 it falls back to
// openChecked.
func openBeneath(dir, rel string) (*os.File, error) {
	d, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(d)
	fd, err := unix.Openat2(d, rel, &unix.OpenHow{
		Flags:   uint64(logOpenFlags),
		Mode:    sinkFileMode,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		// No openat2, or a seccomp filter that refuses it (EPERM, as
		// systemd's SystemCallErrorNumber= says). The fallback is never
		// looser than its own checks, and a file that may really not be
		// opened fails there too.
		return openChecked(dir, rel)
	}
	if err != nil {
		if errors.Is(err, unix.EXDEV) {
			return nil, errors.New("its path leads out of the access log directory (a symbolic link or \"..\")")
		}
		if errors.Is(err, unix.ELOOP) {
			return nil, errors.New("it is a symbolic link")
		}
		return nil, &os.PathError{Op: "openat2", Path: filepath.Join(dir, rel), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir, rel)), nil
}
