package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmesh/vmesh/mesh/cli"
	"github.com/vmesh/vmesh/mesh/config"
	"github.com/vmesh/vmesh/systemd"
)

// Main runs the vmesh CLI with args (os.Args) and returns the exit code.
// ctx ends on SIGINT or SIGTERM.
func Main(ctx context.Context, args []string) int {
	return run(ctx, args, &cli.Env{Stdout: os.Stdout, Stderr: os.Stderr})
}

// run is Main with the output tests give it. The agent command is added
// here because only this package may build an Agent.
func run(ctx context.Context, args []string, env *cli.Env) int {
	return cli.Run(ctx, args, env, map[string]cli.Factory{"agent": newAgentCommand})
}

// agentCommand is `vmesh agent`: flags and files to a Config, an Agent,
// then signals (SIGHUP reloads) until it leaves or is stopped.
type agentCommand struct {
	*cli.Flags
	env   *cli.Env
	flags config.AgentFlags
}

func newAgentCommand(env *cli.Env) cli.Command {
	c := &agentCommand{env: env, Flags: cli.NewFlags(env, "agent", "vmesh agent [flags]",
		`Runs the vmesh agent: raft, the catalog, the HTTP API, DNS, xDS, the
in-process proxy and (with -capture) traffic capture. Flags override
config files, which override the defaults. SIGHUP re-reads the config
and the service files; SIGINT and SIGTERM stop it.`)}
	c.flags.Register(c.FS)
	return c
}

func (c *agentCommand) Synopsis() string { return "run the vmesh agent" }

// reload re-reads the config files and hands them to the agent. A bad
// file changes nothing: the running state stays.
func (c *agentCommand) reload(ctx context.Context, agent *Agent, sd *systemd.Reporter, logger *slog.Logger) error {
	sd.Reloading()
	newCfg, err := c.flags.Build(c.FS)
	if err == nil {
		err = agent.Reload(ctx, newCfg)
	}
	if err != nil {
		logger.Error("reload failed; keeping the running configuration", "err", err)
	}
	sd.Reloaded(err)
	return err
}

func (c *agentCommand) Run(ctx context.Context, args []string) int {
	pos, code, done := c.Parse(args)
	if done {
		return code
	}
	env := c.env
	if len(pos) > 0 {
		return c.UsageError("unexpected argument %q", pos[0])
	}
	cfg, err := c.flags.Build(c.FS)
	if err != nil {
		fmt.Fprintf(env.Stderr, "vmesh agent: %v\n", err)
		return cli.ExitUsage
	}
	level := new(slog.LevelVar)
	level.UnmarshalText([]byte(cfg.LogLevel))
	logger := cli.NewLoggerVar(level, cfg.LogJSON, env.Stderr)
	getenv := env.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	applyRuntime(cfg.Runtime, getenv, logger)
	agent := NewAgent(cfg, logger, env.Stdout)
	// PUT /v1/agent/reload asks this loop to do what SIGHUP does, so
	// the two never run at once and both tell systemd.
	reloads := make(chan chan error)
	agent.SetReloader(func(rctx context.Context) error {
		done := make(chan error, 1)
		select {
		case reloads <- done:
		case <-rctx.Done():
			return rctx.Err()
		}
		select {
		case err := <-done:
			return err
		case <-rctx.Done():
			return rctx.Err()
		}
	})
	agent.logLevel, agent.args = level, append([]string{"agent"}, args...)
	if err := agent.Start(ctx); err != nil {
		fmt.Fprintf(env.Stderr, "vmesh agent: %v\n", err)
		var ce *config.Error
		if errors.As(err, &ce) {
			return cli.ExitUsage
		}
		return cli.ExitFailed
	}
	sd := systemd.StartReporter(newSDService(agent), logger.With("component", "systemd")) // READY, STATUS, WATCHDOG
	defer sd.Stop()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-agent.Left():
			logger.Info("left the cluster; stopping")
			sd.Stop()
			if err := agent.Close(); err != nil {
				logger.Error("shutdown", "err", err)
				return cli.ExitFailed
			}
			return cli.ExitOK
		case <-ctx.Done():
			logger.Info("shutting down")
			sd.Stop()
			if err := agent.Close(); err != nil {
				logger.Error("shutdown", "err", err)
				return cli.ExitFailed
			}
			return cli.ExitOK
		case <-hup:
			logger.Info("reloading configuration (SIGHUP)")
			c.reload(ctx, agent, sd, logger)
		case done := <-reloads:
			logger.Info("reloading configuration (PUT /v1/agent/reload)")
			done <- c.reload(ctx, agent, sd, logger)
		}
	}
}
