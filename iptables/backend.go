package iptables

import (
	"context"
	"fmt"
	"strings"
)

// Backend is one iptables implementation on the host: its save and
// restore commands for IPv4 and, when present, IPv6.
type Backend struct {
	Mode string // "nft" or "legacy"
	// Save and Restore are indexed by family: 0 IPv4, 1 IPv6. An empty
	// IPv6 name means ip6tables is missing for this mode.
	Save, Restore [2]string
}

func (b Backend) String() string { return "iptables-" + b.Mode }

// modeOf reads the "(nf_tables)" or "(legacy)" tag of a --version line.
// iptables before 1.8 has no tag and is legacy.
func modeOf(version string) string {
	if strings.Contains(version, "(nf_tables)") {
		return "nft"
	}
	return "legacy"
}

// Detect finds the backends installed and the one the host uses: the mode
// of plain `iptables` (what the admin's tools see), else nft, else legacy.
// force ("nft" or "legacy") overrides the choice.
func Detect(ctx context.Context, r Runner, force string) (primary Backend, all []Backend, err error) {
	plain := ""
	if out, err := r.Run(ctx, "", "iptables", "--version"); err == nil {
		plain = modeOf(out)
	}
	for _, mode := range []string{"nft", "legacy"} {
		b := Backend{Mode: mode}
		for fam, prog := range []string{"iptables", "ip6tables"} {
			// Debian and Fedora ship iptables-nft-save and friends; older
			// systems only the plain names, which are then of plain's mode.
			cands := []string{prog + "-" + mode}
			if mode == plain {
				cands = append(cands, prog)
			}
			for _, c := range cands {
				out, err := r.Run(ctx, "", c+"-save", "--version")
				if err != nil || modeOf(out) != mode {
					continue
				}
				b.Save[fam], b.Restore[fam] = c+"-save", c+"-restore"
				break
			}
		}
		if b.Save[0] != "" {
			all = append(all, b)
		}
	}
	if len(all) == 0 {
		return Backend{}, nil, ErrNoIptables
	}
	want := force
	if want == "" {
		want = plain
	}
	for _, b := range all {
		if b.Mode == want {
			return b, all, nil
		}
	}
	if force != "" {
		return Backend{}, all, fmt.Errorf("%w: iptables-%s is not installed", ErrNoIptables, force)
	}
	return all[0], all, nil
}
