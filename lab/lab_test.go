package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// netnsLab runs lab/netns.sh with its own work dir.
type netnsLab struct {
	t    *testing.T
	dir  string // lab/
	work string // LAB_WORK
}

func newNetnsLab(t *testing.T) *netnsLab {
	t.Helper()
	testkit.RequireRoot(t, "network namespaces, iptables")
	for _, bin := range []string{"ip", "iptables", "iptables-save", "ip6tables-save", "curl", "getent", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (CI installs iproute2, iptables and curl, and has Go)", bin)
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// A lab someone has up here uses the same names: refuse rather than
	// take it down in cleanup.
	if ns := labNamespaces(t); len(ns) > 0 {
		t.Fatalf("a netns lab is already up on this host (%s); take it down first: lab/netns.sh down", strings.Join(ns, " "))
	}
	return &netnsLab{t: t, dir: dir, work: t.TempDir()}
}

// run runs netns.sh with args, its output streamed to each line of
// onLine (if set) and returned.
func (l *netnsLab) run(timeout time.Duration, onLine func(line string, script *os.Process), args ...string) (string, error) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(l.dir, "netns.sh"), args...)
	cmd.Env = append(os.Environ(), "LAB_WORK="+l.work)
	// The agents and apps netns.sh leaves running write to their own log
	// files; anything else holding the pipe is cut off after this.
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var out bytes.Buffer
	scanned := make(chan struct{})
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if onLine != nil {
				onLine(sc.Text(), cmd.Process)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Wait()
	pw.Close()
	<-scanned
	return out.String(), err
}

func (l *netnsLab) must(timeout time.Duration, args ...string) string {
	l.t.Helper()
	t0 := time.Now()
	out, err := l.run(timeout, nil, args...)
	if err != nil {
		l.t.Fatalf("netns.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	l.t.Logf("netns.sh %s (%s):\n%s", strings.Join(args, " "), time.Since(t0).Round(time.Millisecond), out)
	return out
}

// onlyBinariesLeft checks that down removed the work dir's state (config,
// data, logs, PIDs) and kept only the built binaries.
func (l *netnsLab) onlyBinariesLeft() {
	l.t.Helper()
	entries, err := os.ReadDir(l.work)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "bin" {
			l.t.Errorf("down left %s in the work dir", e.Name())
		}
	}
}

// down takes the lab down when the test ends, however it ends.
func (l *netnsLab) downAtCleanup() {
	l.t.Cleanup(func() {
		if out, err := l.run(2*time.Minute, nil, "down"); err != nil {
			l.t.Errorf("cleanup: netns.sh down: %v\n%s", err, out)
		}
	})
}

func labNamespaces(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var ns []string
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "vmesh-lab-") {
			ns = append(ns, f)
		}
	}
	return ns
}

// hostState is what the lab may touch on the host, as text.
type hostState struct {
	netns, etcNetns, links, ipt4, ipt6, procs string
}

var (
	counters = regexp.MustCompile(`\[\d+:\d+\]`)
	nsID     = regexp.MustCompile(` \(id: \d+\)`)
)

// normalizeSave drops iptables-save's comments and counters.
func normalizeSave(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b.WriteString(counters.ReplaceAllString(line, "") + "\n")
	}
	return b.String()
}

// snapshot reads what the lab may change on the host: its namespaces and
// their /etc/netns entries, the links and the IPv4 and IPv6 rules of the
// host namespace, and the lab's processes. Other packages' tests, which
// `go test ./...` runs at the same time, add and remove namespaces (and
// /etc/netns entries) and run vmesh processes of their own, so those are
// limited to the lab's: the lab names every namespace vmesh-lab-N and
// runs only binaries of its work dir. The links and rules of the host
// namespace are compared whole, as no test touches them.
func snapshot(t *testing.T, work string) hostState {
	t.Helper()
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
		}
		return string(out)
	}
	var ns []string
	for _, line := range strings.Split(run("ip", "netns", "list"), "\n") {
		if line = nsID.ReplaceAllString(strings.TrimSpace(line), ""); strings.HasPrefix(line, "vmesh-lab-") {
			ns = append(ns, line)
		}
	}
	slices.Sort(ns)
	etc, _ := filepath.Glob("/etc/netns/vmesh-lab-*")
	return hostState{
		netns:    strings.Join(ns, "\n"),
		etcNetns: strings.Join(etc, " "),
		links:    run("ip", "-o", "link", "show"),
		ipt4:     normalizeSave(run("iptables-save")),
		ipt6:     normalizeSave(run("ip6tables-save")),
		procs:    labProcesses(work),
	}
}

// labProcesses lists the processes that run a binary of the lab's work
// dir or live in a lab namespace.
func labProcesses(work string) string {
	var out []string
	labNS := map[string]bool{}
	nsFiles, _ := filepath.Glob("/run/netns/vmesh-lab-*")
	for _, f := range nsFiles {
		if fi, err := os.Stat(f); err == nil {
			labNS[fmt.Sprint(fi.Sys().(*syscall.Stat_t).Ino)] = true
		}
	}
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		exe, _ := os.Readlink(p + "/exe")
		nsLink, _ := os.Readlink(p + "/ns/net") // net:[inode]
		inode := strings.TrimSuffix(strings.TrimPrefix(nsLink, "net:["), "]")
		if strings.HasPrefix(exe, work+"/") || labNS[inode] {
			out = append(out, filepath.Base(p)+" "+exe)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

func (s hostState) diff(base hostState) string {
	var b strings.Builder
	for _, f := range []struct{ name, got, want string }{
		{"ip netns list (the lab's)", s.netns, base.netns},
		{"/etc/netns (the lab's)", s.etcNetns, base.etcNetns},
		{"ip -o link", s.links, base.links},
		{"iptables-save", s.ipt4, base.ipt4},
		{"ip6tables-save", s.ipt6, base.ipt6},
		{"the lab's processes", s.procs, base.procs},
	} {
		if f.got != f.want {
			fmt.Fprintf(&b, "%s:\n%s\nwant (before up):\n%s\n", f.name, f.got, f.want)
		}
	}
	return b.String()
}

// startDecoy runs a demo app from outside the lab's work dir, in the host
// namespace: down must stop only its own processes, so this one must
// survive it.
func startDecoy(t *testing.T) *exec.Cmd {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "demoapp")
	if out, err := exec.Command("go", "build", "-o", bin, "./demoapp").CombinedOutput(); err != nil {
		t.Fatalf("building the decoy: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-app", "users", "-listen", "127.0.0.1:0", "-monolith", "http://127.0.0.1:1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

func decoyAlive(cmd *exec.Cmd) bool {
	return cmd.Process.Signal(syscall.Signal(0)) == nil
}

// TestNetnsLab runs the netns lab as CI does: up 5 (three servers, two
// clients, ACLs on), traffic, down. The
// calls cross the mesh both ways (monolith -> microservice, microservice
// -> monolith, plain curl -> microservice), a call the intentions no
// longer allow makes traffic fail, and down leaves the host as it was:
// twice, since down must be safe to repeat.
func TestNetnsLab(t *testing.T) {
	l := newNetnsLab(t)
	decoy := startDecoy(t)
	base := snapshot(t, l.work)
	l.downAtCleanup()

	l.must(3*time.Minute, "up", "5")
	status := l.must(time.Minute, "status")
	for _, want := range []string{
		`vm1\s+\S+\s+server\s+leader\s+alive`, `vm2\s+\S+\s+server\s+(voter|leader)\s+alive`, `vm3\s+\S+\s+server\s+(voter|leader)\s+alive`,
		`vm4\s+\S+\s+client\s+-\s+alive`, `vm5\s+\S+\s+client\s+-\s+alive`,
	} {
		if !regexp.MustCompile(want).MatchString(status) {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}
	out := l.must(time.Minute, "traffic")
	for _, want := range []string{
		`monolith@vm1\s+-> orders\.mesh(:\d+)?\s+HTTP 200  answered by orders@vm2\s+mesh: dialed VIP 24\d\.`,
		`monolith@vm1\s+-> users\.mesh(:\d+)?\s+HTTP 200  answered by users@vm3\s+mesh: dialed VIP 24\d\.`,
		`orders@vm2\s+-> monolith\.mesh(:\d+)?\s+HTTP 200  answered by monolith@vm1\s+mesh: dialed VIP 24\d\.`,
		`users@vm3\s+-> monolith\.mesh(:\d+)?\s+HTTP 200  answered by monolith@vm1\s+mesh: dialed VIP 24\d\.`,
		`curl@vm5\s+-> orders\.mesh(:\d+)?\s+HTTP 200  answered by orders@vm2\s+mesh: dialed VIP 24\d\.[0-9.:]+; orders saw 127\.0\.0\.1:\d+ \(vm2's proxy\)`,
		`all 5 calls went through the mesh`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("traffic output lacks %q", want)
		}
	}

	// Without an intention for orders, calls to it are refused at vm2's
	// mesh port, and traffic says so and fails.
	// ACLs are on: without a token the deletion is refused; with the
	// lab's management token it goes through.
	vmesh := filepath.Join(l.work, "bin", "vmesh")
	if out, err := exec.Command("ip", "netns", "exec", "vmesh-lab-1", vmesh, "intention", "delete", "*", "orders").CombinedOutput(); err == nil || !strings.Contains(string(out), "403") {
		t.Errorf("intention delete without a token: %v: %s; want a 403", err, out)
	}
	del := exec.Command("ip", "netns", "exec", "vmesh-lab-1", vmesh, "intention", "delete", "*", "orders")
	del.Env = append(os.Environ(), "VMESH_HTTP_TOKEN_FILE="+filepath.Join(l.work, "netns", "management-token"))
	if out, err := del.CombinedOutput(); err != nil {
		t.Fatalf("intention delete: %v: %s", err, out)
	}
	// The deletion reaches vm2's proxy through raft and xDS: wait for it.
	refused := func() bool {
		return testkit.NSCommand("vmesh-lab-1", "curl", "-sf", "-m", "2", "http://orders.mesh:9081/orders").Run() != nil
	}
	if !testkit.Eventually(20*time.Second, refused) {
		t.Fatal("calls to orders still pass 20 s after its intention was deleted")
	}
	denied, err := l.run(time.Minute, nil, "traffic", "--wait", "3")
	t.Logf("traffic without an intention for orders:\n%s", denied)
	if err == nil {
		t.Error("traffic succeeded though no intention allows calls to orders")
	}
	for _, want := range []string{
		`monolith@vm1\s+-> orders\.mesh(:\d+)?\s+HTTP 502  FAILED`,
		`curl@vm5\s+-> orders\.mesh(:\d+)?\s+HTTP \d+  FAILED`,
		`orders@vm2\s+-> monolith\.mesh(:\d+)?\s+HTTP 200  answered by monolith@vm1`,
		`2 of 5 calls FAILED`,
	} {
		if !regexp.MustCompile(want).MatchString(denied) {
			t.Errorf("traffic output lacks %q", want)
		}
	}

	for i := range 2 {
		l.must(2*time.Minute, "down")
		if d := snapshot(t, l.work).diff(base); d != "" {
			t.Errorf("after down #%d the host is not as it was:\n%s", i+1, d)
		}
		l.onlyBinariesLeft()
	}
	if !decoyAlive(decoy) {
		t.Error("down stopped a demoapp that was not the lab's")
	}
}

// TestNetnsLabPartialUp kills up midway, once the agents on vm1 and vm2
// run and vm3 is being set up; down must still leave the host as it was.
func TestNetnsLabPartialUp(t *testing.T) {
	l := newNetnsLab(t)
	base := snapshot(t, l.work)
	l.downAtCleanup()

	out, err := l.run(3*time.Minute, func(line string, script *os.Process) {
		if strings.Contains(line, "vm3: agent") {
			script.Signal(syscall.SIGKILL)
		}
	}, "up", "3")
	t.Logf("netns.sh up 3, killed:\n%s", out)
	if err == nil || !strings.Contains(out, "vm3: agent") {
		t.Fatalf("up was not killed at vm3 (err %v)", err)
	}
	if procs := labProcesses(l.work); !strings.Contains(procs, filepath.Join(l.work, "bin", "vmesh")) {
		t.Errorf("no agent of the lab was left running by the killed up:\n%s", procs)
	}
	if snapshot(t, l.work).diff(base) == "" {
		t.Fatal("the killed up changed nothing: the test would prove nothing")
	}
	l.must(2*time.Minute, "down")
	if d := snapshot(t, l.work).diff(base); d != "" {
		t.Errorf("after down the host is not as it was:\n%s", d)
	}
	l.onlyBinariesLeft()
}

// vagrantEnv keeps Vagrant's state out of the source tree and $HOME.
func vagrantEnv(t *testing.T, cwd string) []string {
	tmp := t.TempDir()
	return append(os.Environ(), "VAGRANT_CWD="+cwd, "VAGRANT_HOME="+filepath.Join(tmp, "home"),
		"VAGRANT_DOTFILE_PATH="+filepath.Join(tmp, "dotfile"), "VAGRANT_CHECKPOINT_DISABLE=1")
}

// TestVagrantValidate checks lab/Vagrantfile with `vagrant validate`. With
// no provider installed (CI installs vagrant without its recommended
// vagrant-libvirt) Vagrant 2.3.4 fails with "No usable default provider"
// unless --ignore-provider skips the provider blocks; everything else
// (boxes, networks, synced folders, provisioners, triggers) is checked.
// No box is downloaded and no VM starts.
func TestVagrantValidate(t *testing.T) {
	vagrant, err := exec.LookPath("vagrant")
	if err != nil {
		t.Skip("vagrant is not installed (apt-get install --no-install-recommends vagrant); CI installs it")
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	validate := func(cwd string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, vagrant, "validate", "--ignore-provider")
		cmd.Env = vagrantEnv(t, cwd)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := validate(dir)
	if err != nil || !strings.Contains(out, "Vagrantfile validated successfully") {
		t.Fatalf("vagrant validate: %v\n%s", err, out)
	}
	for _, vm := range []string{"vm1", "vm2", "vm3"} {
		if !strings.Contains(out, "==> "+vm+":") {
			t.Errorf("vagrant validate did not see %s:\n%s", vm, out)
		}
	}

	// The same check refuses a Vagrantfile with a mistake in it.
	src, err := os.ReadFile(filepath.Join(dir, "Vagrantfile"))
	if err != nil {
		t.Fatal(err)
	}
	bad := t.TempDir()
	broken := strings.Replace(string(src), "vm.vm.hostname = name", "vm.vm.hostnme = name", 1)
	if broken == string(src) {
		t.Fatal("the Vagrantfile no longer sets vm.vm.hostname; update this test")
	}
	if err := os.WriteFile(filepath.Join(bad, "Vagrantfile"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := validate(bad); err == nil || !strings.Contains(out, "hostnme") {
		t.Errorf("vagrant validate accepted a misspelt key: %v\n%s", err, out)
	}
}

// TestDemoUnitVerify runs `systemd-analyze verify` on an instance of the
// demo apps' template unit, as lab/provision.sh installs it.
func TestDemoUnitVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd); CI installs it")
	}
	src, err := os.ReadFile("units/vmesh-demo@.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// verify checks that ExecStart names an executable: point it at one.
	bin := filepath.Join(dir, "vmesh-demoapp")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(src), "/usr/local/bin/vmesh-demoapp", bin)
	if unit == string(src) {
		t.Fatal("the unit no longer runs /usr/local/bin/vmesh-demoapp; update this test")
	}
	const name = "vmesh-demo@orders.service"
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// verify exits 0 on unknown keys and bad values (it warns): any line
	// that names the unit is a failure too.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "vmesh-demo@") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}

// TestProvisionConfig checks what provision.sh writes for each VM of
// both labs: the demo apps' service files by placement (stale ones
// removed), the protocol from LAB_PROTOCOL, and files the real vmesh
// parses strictly (`vmesh redirect apply --dry-run` decodes the whole
// config and changes nothing).
func TestProvisionConfig(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs go, to build vmesh")
	}
	dir := t.TempDir()
	vmesh := filepath.Join(dir, "vmesh")
	build := exec.Command("go", "build", "-o", vmesh, ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	provision := func(env []string, args ...string) (string, error) {
		cmd := exec.Command("./provision.sh", append([]string{"config"}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	root := filepath.Join(dir, "vm")
	// A Vagrant client's first start: its agent token, and a join token
	// in a file the config names (provision.sh vagrant-join).
	agentToken, joinToken := filepath.Join(dir, "agent-token"), filepath.Join(dir, "join-token")
	os.WriteFile(agentToken, []byte("0c6f7d3e-8f1a-4c2b-9d5e-6a7b8c9d0e1f\n"), 0o600)
	os.WriteFile(joinToken, []byte("a-join-token\n"), 0o600)
	services := func() []string {
		entries, _ := os.ReadDir(filepath.Join(root, "etc/vmesh/services.d"))
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	for _, c := range []struct {
		name     string
		keep     bool // provision over the previous case's root
		env      []string
		args     []string
		services []string
		want     []string // in vmesh.hcl or a service file
	}{
		{"netns vm1 bootstraps", false, nil, []string{"--node", "vm1", "--ip", "10.201.0.11", "--vms", "3", "--bootstrap"},
			[]string{"monolith.hcl"}, []string{`bootstrap    = true`, `bind_addr    = "10.201.0.11"`, `protocol = "http"`, `port     = 9080`}},
		{"two VMs: vm2 runs both microservices", false, nil, []string{"--node", "vm2", "--ip", "10.201.0.12", "--vms", "2"},
			[]string{"orders.hcl", "users.hcl"}, []string{`node_name    = "vm2"`}},
		{"three VMs: users moves to vm3", true, nil, []string{"--node", "vm2", "--ip", "10.201.0.12", "--vms", "3"},
			[]string{"orders.hcl"}, nil},
		{"a fourth VM runs no app", false, nil, []string{"--node", "vm4", "--ip", "10.201.0.14", "--vms", "4"},
			nil, nil},
		{"vagrant vm3 with resolvers, tcp", false, []string{"LAB_PROTOCOL=tcp"},
			[]string{"--node", "vm3", "--ip", "192.168.56.13", "--vms", "3", "--recursor", "10.0.2.3", "--recursor", "1.1.1.1"},
			[]string{"users.hcl"}, []string{`recursors = ["10.0.2.3", "1.1.1.1"]`, `protocol = "tcp"`}},
		{"vagrant vm2, a client, joins at start", false, nil,
			[]string{"--node", "vm2", "--ip", "10.202.0.12", "--vms", "3", "--agent-token-file", agentToken,
				"--join", "10.202.0.11:7400", "--join-token-file", joinToken},
			[]string{"orders.hcl"}, []string{`join         = "10.202.0.11:7400"`, `token_file   = "` + joinToken + `"`,
				`agent              = "0c6f7d3e-8f1a-4c2b-9d5e-6a7b8c9d0e1f"`, "# A client"}},
	} {
		if !c.keep {
			os.RemoveAll(root)
		}
		out, err := provision(c.env, append([]string{"--root", root}, c.args...)...)
		if err != nil {
			t.Fatalf("%s: provision.sh config: %v\n%s", c.name, err, out)
		}
		if got := services(); !slices.Equal(got, c.services) {
			t.Errorf("%s: services.d holds %v, want %v", c.name, got, c.services)
		}
		cfg := filepath.Join(root, "etc/vmesh/vmesh.hcl")
		all, _ := os.ReadFile(cfg)
		check := []string{"redirect", "apply", "--dry-run", "-config", cfg}
		for _, s := range services() {
			f := filepath.Join(root, "etc/vmesh/services.d", s)
			b, _ := os.ReadFile(f)
			all = append(all, b...)
			check = append(check, "-config", f)
		}
		for _, w := range c.want {
			if !strings.Contains(string(all), w) {
				t.Errorf("%s: the files lack %q:\n%s", c.name, w, all)
			}
		}
		if out, err := exec.Command(vmesh, check...).CombinedOutput(); err != nil {
			t.Errorf("%s: vmesh does not take the files: %v\n%s", c.name, err, out)
		}
	}

	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"--node", "web1", "--ip", "10.0.0.1", "--vms", "3"}, "--node"},
		{nil, []string{"--node", "vm1", "--vms", "3"}, "--ip"},
		{nil, []string{"--node", "vm1", "--ip", "10.0.0.1", "--vms", "three"}, "--vms"},
		{nil, []string{"--node", "vm1", "--ip", "10.0.0.1", "--vms", "3", "--voters", "5"}, "--voters"},
		{[]string{"LAB_PROTOCOL=grpc"}, []string{"--node", "vm1", "--ip", "10.0.0.1", "--vms", "3"}, "LAB_PROTOCOL"},
		{nil, []string{"--node", "vm2", "--ip", "10.0.0.2", "--vms", "3", "--join", "10.0.0.1:7400"}, "--join-token-file"},
	} {
		out, err := provision(c.env, append([]string{"--root", t.TempDir()}, c.args...)...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%v %v: %v %q, want an error naming %s", c.env, c.args, err, out, c.want)
		}
	}
}

// TestShellcheck lints the lab's scripts (CI installs shellcheck).
func TestShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Skip("shellcheck is not installed (apt-get install shellcheck); CI installs it")
	}
	scripts, err := filepath.Glob("*.sh")
	box, _ := filepath.Glob("box/*.sh")
	scripts = append(scripts, box...)
	if err != nil || len(scripts) < 4 {
		t.Fatalf("the lab's scripts: %v %v", scripts, err)
	}
	// -x follows the `source` of common.sh (a directive names it).
	if out, err := exec.Command(sc, append([]string{"-x"}, scripts...)...).CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// TestVagrantScriptRefuses checks that lab/vagrant.sh refuses bad
// commands and arguments with a message naming them, before it touches
// libvirt or Vagrant (the whole cycle runs in CI where KVM is usable).
func TestVagrantScriptRefuses(t *testing.T) {
	testkit.RequireRoot(t, "lab/vagrant.sh needs root for every command")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, "usage: lab/vagrant.sh deps | up | traffic | reboot VM"},
		{[]string{"reboot"}, "usage: lab/vagrant.sh reboot VM"},
		{[]string{"reboot", "vm9"}, "no VM 'vm9' (vm1..vm3)"},
		{[]string{"down", "--boxes"}, "down: unknown argument --boxes"},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, "./vagrant.sh", c.args...)
		cmd.Env = append(os.Environ(), "VMESH_LAB_VAGRANT_HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("vagrant.sh %v: %v %q, want an error saying %q", c.args, err, out, c.want)
		}
	}
}

// TestBoxCachePath checks that build.sh --print-path names the box under
// VMESH_LAB_CACHE and builds nothing (lab/vagrant.sh relies on both).
func TestBoxCachePath(t *testing.T) {
	cache := t.TempDir()
	cmd := exec.Command("box/build.sh", "--print-path")
	cmd.Env = append(os.Environ(), "VMESH_LAB_CACHE="+cache)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build.sh --print-path: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), filepath.Join(cache, "vmesh-debian12-local.box"); got != want {
		t.Errorf("build.sh --print-path = %q, want %q", got, want)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Errorf("--print-path wrote into the cache: %v", entries)
	}
}
