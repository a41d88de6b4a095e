package checks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

// probeScript runs a script check's command (ScriptArgs, no shell) as
// the agent's user, as Consul's does: exit 0 is passing, 1 warning,
// anything else critical, and the output (stdout and stderr) is the
// check's. It runs only when the runner's Scripts is set (the agent's
// config enables script checks); a timeout kills the command's process
// group. A Docker check is kept but not run: vmesh has no Docker client.
func (rc *checkRun) probeScript(ctx context.Context) checkResult {
	if rc.kind == discovery.CheckDocker {
		return checkResult{discovery.HealthCritical, "Docker checks are not run by vmesh (no Docker API client); use a script, HTTP, TCP or gRPC check"}
	}
	if !rc.r.Scripts {
		return checkResult{discovery.HealthCritical, "script checks are not enabled on this agent (enable_script_checks)"}
	}
	args := rc.def.ScriptArgs
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: a shell's children too.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	w := &cappedWriter{buf: &out, max: rc.r.outputMax() + 1}
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	output := out.String()
	if ctx.Err() != nil {
		return checkResult{discovery.HealthCritical, fmt.Sprintf("Timed out (%s) running check", rc.timeout)}
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return checkResult{discovery.HealthPassing, output}
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return checkResult{discovery.HealthWarning, output}
	case errors.As(err, &exit):
		return checkResult{discovery.HealthCritical, output}
	}
	return checkResult{discovery.HealthCritical, fmt.Sprintf("running %q: %v", args[0], err)}
}

// cappedWriter keeps the first max bytes written and drops the rest, so
// a chatty script cannot grow the agent's memory.
type cappedWriter struct {
	buf *bytes.Buffer
	max int
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
