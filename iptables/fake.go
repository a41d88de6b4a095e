package iptables

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Fake is a Runner that models iptables-save and iptables-restore
// --noflush for the backends it is given, keeping the rules as text. A
// restore is atomic: any bad line leaves the state as it was, as the real
// one does.
type Fake struct {
	mu    sync.Mutex
	plain string              // mode of plain `iptables`; "" when absent
	have  map[string]bool     // installed binaries
	state map[string]*fakeFam // by "nft/4", "legacy/6", ...
	calls []string
	// FailRestores makes the next n restores fail (to test retries).
	FailRestores int
}

var _ Runner = (*Fake)(nil)

// NewFake returns a host whose plain iptables is modes[0] and which has
// the iptables and ip6tables binaries of every mode in modes.
func NewFake(modes ...string) *Fake {
	f := &Fake{have: map[string]bool{}, state: map[string]*fakeFam{}}
	if len(modes) > 0 {
		f.plain = modes[0]
	}
	for _, m := range modes {
		for _, p := range []string{"iptables", "ip6tables"} {
			f.have[p+"-"+m+"-save"], f.have[p+"-"+m+"-restore"] = true, true
		}
	}
	return f
}

// WithoutIPv6 removes the ip6tables binaries of mode.
func (f *Fake) WithoutIPv6(mode string) *Fake {
	delete(f.have, "ip6tables-"+mode+"-save")
	delete(f.have, "ip6tables-"+mode+"-restore")
	return f
}

type fakeFam struct {
	tables map[string]*fakeTable
}

type fakeTable struct {
	chains []string // built-ins first, then user chains in creation order
	policy map[string]string
	rules  map[string][]string
}

var builtins = map[string][]string{
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"raw":    {"PREROUTING", "OUTPUT"},
}

func (t *fakeTable) clone() *fakeTable {
	c := &fakeTable{chains: slices.Clone(t.chains), policy: maps.Clone(t.policy), rules: map[string][]string{}}
	for k, v := range t.rules {
		c.rules[k] = slices.Clone(v)
	}
	return c
}

func newTable(name string) (*fakeTable, error) {
	b, ok := builtins[name]
	if !ok {
		return nil, fmt.Errorf("can't initialize iptables table `%s': Table does not exist", name)
	}
	t := &fakeTable{chains: slices.Clone(b), policy: map[string]string{}, rules: map[string][]string{}}
	for _, c := range b {
		t.policy[c] = "ACCEPT"
	}
	return t, nil
}

// Calls returns the commands run so far, one line each.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// State returns every backend and family's rules as iptables-save prints
// them (without counters), headed "# nft/4" and so on.
func (f *Fake) State() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(f.state)) {
		if s := f.save(k); s != "" {
			fmt.Fprintf(&b, "# %s\n%s", k, s)
		}
	}
	return b.String()
}

// Save returns one backend and family's rules ("nft", 4).
func (f *Fake) Save(mode string, fam int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.save(fmt.Sprintf("%s/%d", mode, fam))
}

// Restore runs a script through one backend and family as
// iptables-restore --noflush would, e.g. to seed someone else's rules.
func (f *Fake) Restore(mode string, fam int, script string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restore(fmt.Sprintf("%s/%d", mode, fam), script)
}

func (f *Fake) save(key string) string {
	fam := f.state[key]
	if fam == nil {
		return ""
	}
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(fam.tables)) {
		t := fam.tables[name]
		fmt.Fprintf(&b, "*%s\n", name)
		// Built-ins in their order, user chains by name (as legacy lists
		// them), so that equal states print equal.
		n := len(builtins[name])
		chains := append(slices.Clone(t.chains[:n]), slices.Sorted(slices.Values(t.chains[n:]))...)
		for _, c := range chains {
			p := t.policy[c]
			if p == "" {
				p = "-"
			}
			fmt.Fprintf(&b, ":%s %s [0:0]\n", c, p)
		}
		for _, c := range chains {
			for _, r := range t.rules[c] {
				fmt.Fprintf(&b, "-A %s %s\n", c, r)
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

func (f *Fake) Run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, strings.TrimSpace(name+" "+strings.Join(args, " ")))
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if name == "iptables" || name == "ip6tables" {
		if f.plain == "" {
			return "", fmt.Errorf("%s: %w", name, errNotFound)
		}
		name = name + "-" + f.plain
		if len(args) == 1 && args[0] == "--version" {
			return version(name, f.plain), nil
		}
		return "", fmt.Errorf("fake: only --version is modelled for %s", name)
	}
	if !f.have[name] {
		// Plain iptables-save is the plain mode's.
		for _, tool := range []string{"-save", "-restore"} {
			if prog, ok := strings.CutSuffix(name, tool); ok && (prog == "iptables" || prog == "ip6tables") && f.plain != "" {
				name = prog + "-" + f.plain + tool
			}
		}
		if !f.have[name] {
			return "", fmt.Errorf("%s: %w", name, errNotFound)
		}
	}
	prog, tool, _ := strings.Cut(name, "-")
	mode, tool, _ := strings.Cut(tool, "-")
	famNo := 4
	if prog == "ip6tables" {
		famNo = 6
	}
	key := fmt.Sprintf("%s/%d", mode, famNo)
	if len(args) == 1 && args[0] == "--version" {
		return version(name, mode), nil
	}
	switch tool {
	case "save":
		if len(args) != 0 {
			return "", fmt.Errorf("fake: %s %v not modelled", name, args)
		}
		return f.save(key), nil
	case "restore":
		if len(args) != 1 || args[0] != "--noflush" {
			return "", fmt.Errorf("fake: %s without --noflush would flush whole tables", name)
		}
		if f.FailRestores > 0 {
			f.FailRestores--
			return "", fmt.Errorf("%s: fake failure", name)
		}
		return "", f.restore(key, stdin)
	}
	return "", fmt.Errorf("fake: %s not modelled", name)
}

func version(name, mode string) string {
	tag := "(nf_tables)"
	if mode == "legacy" {
		tag = "(legacy)"
	}
	return fmt.Sprintf("%s v1.8.9 %s\n", name, tag)
}

// restore applies script to a copy of the state and keeps the copy only
// if every line worked.
func (f *Fake) restore(key, script string) error {
	old := f.state[key]
	fam := &fakeFam{tables: map[string]*fakeTable{}}
	if old != nil {
		for k, t := range old.tables {
			fam.tables[k] = t.clone()
		}
	}
	var t *fakeTable
	for n, line := range strings.Split(script, "\n") {
		line = strings.Join(strings.Fields(line), " ")
		if err := fam.line(&t, line); err != nil {
			return fmt.Errorf("iptables-restore: line %d failed (%q): %w", n+1, line, err)
		}
	}
	if t != nil {
		return fmt.Errorf("iptables-restore: no COMMIT at the end")
	}
	f.state[key] = fam
	return nil
}

func (fam *fakeFam) line(cur **fakeTable, line string) error {
	t := *cur
	switch {
	case line == "" || strings.HasPrefix(line, "#"):
		return nil
	case strings.HasPrefix(line, "*"):
		name := line[1:]
		if fam.tables[name] == nil {
			nt, err := newTable(name)
			if err != nil {
				return err
			}
			fam.tables[name] = nt
		}
		*cur = fam.tables[name]
		return nil
	case t == nil:
		return fmt.Errorf("outside a table")
	case line == "COMMIT":
		*cur = nil
		return nil
	case strings.HasPrefix(line, ":"):
		f := strings.Fields(line[1:])
		if len(f) < 2 {
			return fmt.Errorf("bad chain line")
		}
		name, pol := f[0], f[1]
		if _, builtin := t.policy[name]; builtin {
			if pol != "-" {
				t.policy[name] = pol
			}
			return nil
		}
		if pol != "-" {
			return fmt.Errorf("user chain %s cannot have a policy", name)
		}
		if !slices.Contains(t.chains, name) {
			t.chains = append(t.chains, name)
		}
		t.rules[name] = nil // --noflush still flushes a declared user chain
		return nil
	}
	op, rest, _ := strings.Cut(line, " ")
	chain, spec, _ := strings.Cut(rest, " ")
	if chain == "" {
		if op == "-F" {
			for _, c := range t.chains {
				t.rules[c] = nil
			}
			return nil
		}
		return fmt.Errorf("%s needs a chain", op)
	}
	if !slices.Contains(t.chains, chain) && op != "-N" {
		return fmt.Errorf("chain %s does not exist", chain)
	}
	_, builtin := t.policy[chain]
	checkTarget := func() error {
		_, tgt, ok := strings.Cut(" "+spec, " -j ")
		if !ok {
			return nil
		}
		tgt, _, _ = strings.Cut(tgt, " ")
		if strings.ToUpper(tgt) == tgt && strings.HasPrefix(tgt, ChainPrefix) && !slices.Contains(t.chains, tgt) {
			return fmt.Errorf("target %s does not exist", tgt)
		}
		return nil
	}
	switch op {
	case "-A":
		if err := checkTarget(); err != nil {
			return err
		}
		t.rules[chain] = append(t.rules[chain], spec)
	case "-I":
		pos := 1
		if n, after, ok := strings.Cut(spec, " "); ok {
			if p, err := strconv.Atoi(n); err == nil {
				pos, spec = p, after
			}
		}
		if pos < 1 || pos > len(t.rules[chain])+1 {
			return fmt.Errorf("index of insertion too big")
		}
		if err := checkTarget(); err != nil {
			return err
		}
		t.rules[chain] = slices.Insert(t.rules[chain], pos-1, spec)
	case "-D":
		i := slices.Index(t.rules[chain], spec)
		if i < 0 {
			return fmt.Errorf("bad rule (does a matching rule exist in that chain?)")
		}
		t.rules[chain] = slices.Delete(t.rules[chain], i, i+1)
	case "-F":
		t.rules[chain] = nil
	case "-N":
		if slices.Contains(t.chains, chain) {
			return fmt.Errorf("chain already exists")
		}
		t.chains = append(t.chains, chain)
	case "-X":
		if builtin {
			return fmt.Errorf("cannot delete built-in chain %s", chain)
		}
		if len(t.rules[chain]) > 0 {
			return fmt.Errorf("directory not empty: chain %s has rules", chain)
		}
		for _, c := range t.chains {
			for _, r := range t.rules[c] {
				if strings.Contains(r+" ", " -j "+chain+" ") || strings.Contains(r+" ", " -g "+chain+" ") {
					return fmt.Errorf("too many links: chain %s is referenced", chain)
				}
			}
		}
		t.chains = slices.DeleteFunc(t.chains, func(c string) bool { return c == chain })
		delete(t.rules, chain)
	default:
		return fmt.Errorf("unknown command %s", op)
	}
	return nil
}
