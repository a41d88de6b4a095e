package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Flags is a command's flag set and its help. Commands embed it, so every
// one parses and prints help the same way.
type Flags struct {
	env *Env
	// FS is the command's flag set; commands add their flags to it.
	FS *flag.FlagSet
	// name is the command as typed ("services register"), usage its
	// synopsis line(s) after "Usage: ", about the text under it.
	name, usage, about string
}

// NewFlags returns the flag set of command name. Go's flag package takes
// -flag and --flag alike, as the CLI promises.
func NewFlags(env *Env, name, usage, about string) *Flags {
	fs := flag.NewFlagSet("vmesh "+name, flag.ContinueOnError)
	// Parse errors and help are printed by Parse, with the full help.
	fs.SetOutput(io.Discard)
	return &Flags{env: env, FS: fs, name: name, usage: usage, about: about}
}

// Help is the command's usage line, description and flags with their
// defaults, taken from the flag set so it never drifts from the code.
func (f *Flags) Help() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s\n", f.usage)
	if f.about != "" {
		fmt.Fprintf(&b, "\n%s\n", strings.TrimSpace(f.about))
	}
	n := 0
	f.FS.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		b.WriteString("\nFlags:\n")
		f.FS.SetOutput(&b)
		f.FS.PrintDefaults()
		f.FS.SetOutput(io.Discard)
	}
	return b.String()
}

// Parse parses flags anywhere among args (Go's flag package stops at the
// first positional one), so `vmesh join ADDR -token-file F` works, and returns
// the positional arguments. done says the command is over with code: -h
// printed the help (0), or the flags were wrong (2).
func (f *Flags) Parse(args []string) (pos []string, code int, done bool) {
	pos, err := ParseArgs(f.FS, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(f.env.Stdout, f.Help())
		return nil, ExitOK, true
	}
	if err != nil {
		fmt.Fprintf(f.env.Stderr, "vmesh %s: %v\n\n%s", f.name, err, f.Help())
		return nil, ExitUsage, true
	}
	return pos, ExitOK, false
}

// ParseSub is Parse for a command with subcommands: flags may come
// anywhere, and the first positional argument is the subcommand.
func (f *Flags) ParseSub(args []string) (sub string, pos []string, code int, done bool) {
	pos, code, done = f.Parse(args)
	if done || len(pos) == 0 {
		return "", pos, code, done
	}
	return pos[0], pos[1:], code, done
}

// UsageError prints a usage mistake with the help and returns ExitUsage.
func (f *Flags) UsageError(format string, args ...any) int {
	fmt.Fprintf(f.env.Stderr, "vmesh %s: %s\n\n%s", f.name, fmt.Sprintf(format, args...), f.Help())
	return ExitUsage
}

// ParseArgs parses fs with flags before, between or after positional
// arguments; "--" ends the flags.
func ParseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// NewLogger is the logger of the agent and of `vmesh proxy`: level is
// debug, info, warn or error (config validation checked it).
func NewLogger(level string, json bool, w io.Writer) *slog.Logger {
	lvl := new(slog.LevelVar)
	lvl.UnmarshalText([]byte(level))
	return NewLoggerVar(lvl, json, w)
}

// NewLoggerVar is NewLogger at a level that may change while it runs
// (the admin listener's /logging).
func NewLoggerVar(lvl *slog.LevelVar, json bool, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: lvl}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
