package systemd

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Defaults of the installed layout, the paths operators of Consul-like
// agents expect (docs/systemd.md lists them).
const (
	DefaultExecPath   = "/usr/local/bin/vmesh"
	DefaultConfigPath = "/etc/vmesh/vmesh.hcl"
	DefaultUser       = "vmesh"
	DefaultWatchdog   = 30 * time.Second
	// UnitName is the unit's name; UnitPath is where install writes it.
	UnitName = "vmesh.service"
	UnitPath = "/etc/systemd/system/" + UnitName
)

// UnitOptions are the parts of the unit that vary; zero fields take the
// defaults above.
type UnitOptions struct {
	// ExecPath is the vmesh binary the unit runs.
	ExecPath string
	// ConfigPath is the agent config file passed with -config.
	ConfigPath string
	// User runs the agent (and names its group).
	User string
	// Watchdog is systemd's watchdog timeout; the agent pings at half
	// of it. Whole seconds, at least 2.
	Watchdog time.Duration
}

func (o UnitOptions) withDefaults() UnitOptions {
	if o.ExecPath == "" {
		o.ExecPath = DefaultExecPath
	}
	if o.ConfigPath == "" {
		o.ConfigPath = DefaultConfigPath
	}
	if o.User == "" {
		o.User = DefaultUser
	}
	if o.Watchdog == 0 {
		o.Watchdog = DefaultWatchdog
	}
	return o
}

func (o UnitOptions) validate() error {
	var bad []string
	for _, p := range []struct{ name, v string }{{"binary path", o.ExecPath}, {"config path", o.ConfigPath}} {
		if !filepath.IsAbs(p.v) || strings.ContainsAny(p.v, " \t\n\"'\\$%;") {
			bad = append(bad, fmt.Sprintf("%s %q must be absolute, without spaces, quotes, '$', '%%', ';' or '\\'", p.name, p.v))
		}
	}
	if o.User == "root" || strings.ContainsAny(o.User, " \t\n:/") {
		bad = append(bad, fmt.Sprintf("user %q: must be a plain user name, not root", o.User))
	}
	if o.Watchdog < 2*time.Second || o.Watchdog%time.Second != 0 {
		bad = append(bad, fmt.Sprintf("watchdog %s: must be whole seconds, at least 2s", o.Watchdog))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrUnitOptions, strings.Join(bad, "; "))
	}
	return nil
}

// Unit renders vmesh.service. It is a pure function of o; the golden file
// testdata/vmesh.service.golden holds its output for the defaults.
//
// The hardening keeps what the agent needs and drops the rest: it runs as
// an unprivileged user with only CAP_NET_ADMIN (iptables, netlink: the
// capture issue) and CAP_NET_BIND_SERVICE (DNS on port 53, proxies on low
// ports), sees the OS read-only, writes only its state and runtime
// directories, and may open only unix, IP and netlink sockets.
// `systemd-analyze security --offline=true` rates it 1.6 ("OK");
// docs/systemd.md explains each choice.
func Unit(o UnitOptions) (string, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return "", err
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# %s: written by 'vmesh install', which rewrites it. Put local", UnitName)
	w("# changes in a drop-in ('systemctl edit vmesh'). See docs/systemd.md.")
	w("[Unit]")
	w("Description=vmesh service mesh agent")
	w("Documentation=https://github.com/vmesh/vmesh/blob/main/docs/systemd.md")
	w("Wants=network-online.target")
	w("After=network-online.target")
	w("")
	w("[Service]")
	w("# READY=1 once raft has a leader (or the agent waits for 'vmesh join'),")
	w("# the API listens and everything the agent starts serves; STATUS= lines;")
	w("# STOPPING=1. On SIGHUP: RELOADING=1, reload, READY=1. Type=notify-reload")
	w("# needs systemd 253; Type=notify with ExecReload also runs on 252.")
	w("Type=notify")
	w("NotifyAccess=main")
	w("ExecStart=%s agent -config %s", o.ExecPath, o.ConfigPath)
	w("ExecReload=/bin/kill -HUP $MAINPID")
	w("# However the agent ended (crash, watchdog, SIGKILL), no capture rule")
	w("# may steer traffic into a proxy that is gone. '+' runs it as root,")
	w("# outside the sandbox below; it is a no-op when nothing is there.")
	w("ExecStopPost=+%s redirect remove", o.ExecPath)
	w("# The agent pings at half this while its API and raft are alive.")
	w("WatchdogSec=%ds", int(o.Watchdog/time.Second))
	w("Restart=on-failure")
	w("RestartSec=5s")
	w("# A member that sees no raft leader this long fails its start and is retried.")
	w("TimeoutStartSec=90s")
	w("LimitNOFILE=65536")
	w("")
	w("User=%s", o.User)
	w("Group=%s", o.User)
	w("UMask=0077")
	w("StateDirectory=vmesh")
	w("StateDirectoryMode=0700")
	w("RuntimeDirectory=vmesh")
	w("RuntimeDirectoryMode=0750")
	w("# /var/log/vmesh: the only place proxy-defaults' file access logs may go")
	w("# (telemetry.access_log_dir); the rest of the OS is read-only below.")
	w("LogsDirectory=vmesh")
	w("LogsDirectoryMode=0750")
	w("ConfigurationDirectory=vmesh")
	w("")
	w("# Least privilege: iptables and netlink need CAP_NET_ADMIN; DNS on port")
	w("# 53 and proxies on low ports need CAP_NET_BIND_SERVICE.")
	w("AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE")
	w("CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE")
	w("NoNewPrivileges=yes")
	w("ProtectSystem=strict")
	w("ProtectHome=yes")
	w("PrivateTmp=yes")
	w("PrivateDevices=yes")
	w("PrivateMounts=yes")
	w("ProtectKernelTunables=yes")
	w("ProtectKernelModules=yes")
	w("ProtectKernelLogs=yes")
	w("ProtectControlGroups=yes")
	w("ProtectClock=yes")
	w("ProtectHostname=yes")
	w("ProtectProc=invisible")
	w("RestrictNamespaces=yes")
	w("RestrictRealtime=yes")
	w("RestrictSUIDSGID=yes")
	w("LockPersonality=yes")
	w("MemoryDenyWriteExecute=yes")
	w("RemoveIPC=yes")
	w("KeyringMode=private")
	w("DevicePolicy=closed")
	w("# Netlink: interface addresses and the vmesh0 dummy interface.")
	w("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK")
	w("SystemCallFilter=@system-service")
	w("SystemCallFilter=~@privileged @resources")
	w("SystemCallErrorNumber=EPERM")
	w("SystemCallArchitectures=native")
	w("")
	w("[Install]")
	w("WantedBy=multi-user.target")
	return b.String(), nil
}
