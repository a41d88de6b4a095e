package iptables

import (
	"strings"
)

// saved is what iptables-save shows of our state, table by table.
type saved struct {
	tables []*savedTable
}

type savedTable struct {
	name string
	// ours are our chains (VMESH_*), in the order iptables-save lists them.
	ours []string
	// jumps are our rules in other chains, exactly as iptables-save prints
	// them ("-A OUTPUT ... -j VMESH_OUTPUT"), so "-D" + the rest matches.
	jumps []string
	// rules are the rules inside our chains.
	rules []string
}

func (s *saved) table(name string) *savedTable {
	for _, t := range s.tables {
		if t.name == name {
			return t
		}
	}
	return nil
}

// empty reports whether none of our state is there.
func (s *saved) empty() bool {
	for _, t := range s.tables {
		if len(t.ours) > 0 || len(t.jumps) > 0 {
			return false
		}
	}
	return true
}

// isOurs reports whether a rule in a chain not ours is one we added: it
// jumps to one of our chains or carries our comment.
func isOurs(rule string) bool {
	return strings.Contains(rule, " -j "+ChainPrefix) || strings.Contains(rule, " -g "+ChainPrefix) ||
		strings.Contains(rule, `--comment "vmesh`) || strings.Contains(rule, "--comment vmesh")
}

// parseSave reads iptables-save output (with or without counters).
func parseSave(out string) *saved {
	s := &saved{}
	var cur *savedTable
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			cur = &savedTable{name: line[1:]}
			s.tables = append(s.tables, cur)
		case cur == nil:
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if strings.HasPrefix(name, ChainPrefix) {
				cur.ours = append(cur.ours, name)
			}
		case strings.HasPrefix(line, "-A ") || strings.HasPrefix(line, "[") && strings.Contains(line, "] -A "):
			if i := strings.Index(line, "-A "); i > 0 { // "[pkts:bytes] -A ..." (iptables-save -c)
				line = line[i:]
			}
			chain, _, _ := strings.Cut(line[3:], " ")
			if strings.HasPrefix(chain, ChainPrefix) {
				cur.rules = append(cur.rules, line)
			} else if isOurs(line) {
				cur.jumps = append(cur.jumps, line)
			}
		}
	}
	return s
}

// show renders our part of a save: per table, our chains, the jumps into
// them and their rules.
func (s *saved) show() string {
	var b strings.Builder
	for _, t := range s.tables {
		if len(t.ours) == 0 && len(t.jumps) == 0 {
			continue
		}
		b.WriteString("*" + t.name + "\n")
		for _, c := range t.ours {
			b.WriteString(":" + c + "\n")
		}
		for _, j := range t.jumps {
			b.WriteString(j + "\n")
		}
		for _, r := range t.rules {
			b.WriteString(r + "\n")
		}
	}
	return b.String()
}

// Normalize drops iptables-save's comment lines and counters, so that two
// saves of the same state compare equal.
func Normalize(save string) string {
	var b strings.Builder
	for _, line := range strings.Split(save, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, ":") {
			if i := strings.LastIndex(line, " ["); i > 0 {
				line = line[:i]
			}
		}
		if strings.HasPrefix(line, "[") {
			if i := strings.Index(line, "] "); i > 0 {
				line = line[i+2:]
			}
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}
