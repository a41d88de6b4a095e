package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Runner runs one command with stdin and returns its standard output. It
// is the only way this package touches netfilter; Fake records state as
// text instead.
type Runner interface {
	Run(ctx context.Context, stdin, name string, args ...string) (string, error)
}

// DefaultExecTimeout bounds every command ExecRunner runs.
const DefaultExecTimeout = 10 * time.Second

// ExecRunner runs commands with os/exec, each under a timeout.
type ExecRunner struct {
	// Prefix is run before every command, e.g. {"ip", "netns", "exec",
	// "NAME"} to act inside a network namespace.
	Prefix []string
	// Timeout of each command; DefaultExecTimeout when zero.
	Timeout time.Duration
}

// errNotFound wraps a command that is not installed.
var errNotFound = errors.New("not found")

func (r ExecRunner) Run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultExecTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	argv := append(append(append([]string(nil), r.Prefix...), name), args...)
	if _, err := exec.LookPath(name); err != nil {
		return "", fmt.Errorf("%s: %w", name, errNotFound)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = time.Second
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return out.String(), fmt.Errorf("%s: timed out after %s", strings.Join(argv, " "), timeout)
		}
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
