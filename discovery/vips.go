package discovery

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"
)

// Virtual IPs: every service gets one stable IPv4 address that apps dial
// (`<svc>.mesh`, `<svc>.virtual.consul`) and that capture sends into the
// local proxy. The raft leader picks the address (raft.Server's VIP
// allocator) and the command carries it, so the FSM stays deterministic:
// it only checks that the address is an IPv4 address no other service
// holds.

// ErrVIPTaken is the FSM's answer to an allocation whose address another
// service already holds, or for a service that already has another one.
var ErrVIPTaken = errors.New("discovery: virtual IP already allocated")

const tableVIPs = "vips"

// VIP is a service's virtual IP.
type VIP struct {
	// Service is the service's name as first seen; lookups ignore case,
	// as the catalog's do.
	Service     string
	IP          string
	CreateIndex uint64
	ModifyIndex uint64
}

func vipTables(tables map[string]*memdb.TableSchema) {
	tables[tableVIPs] = &memdb.TableSchema{Name: tableVIPs, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Service", Lowercase: true}},
		"ip": {Name: "ip", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "IP"}},
	}}
}

// VIPOp is a virtual IP write.
type VIPOp string

// Virtual IP operations. Allocate of the address the service already has
// is a no-op; Free of a service without one is too.
const (
	VIPAllocate VIPOp = "allocate"
	VIPFree     VIPOp = "free"
)

// VIPRequest allocates (or frees) a service's virtual IP. The leader
// chooses IP; followers never pick addresses.
type VIPRequest struct {
	Op      VIPOp
	Service string
	IP      string
}

func (VIPRequest) MessageType() MessageType { return VIPType }

// VIPApply performs op. Allocate refuses (ErrVIPTaken) an address another
// service holds and a second address for one service: a VIP never moves
// while its service exists, so apps and kernels holding it stay right.
func (s *Store) VIPApply(idx uint64, op VIPOp, service, ip string) error {
	if strings.TrimSpace(service) == "" {
		return fmt.Errorf("%w: VIP: missing service", ErrInvalid)
	}
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableVIPs, "id", service)
	if err != nil {
		return err
	}
	old, _ := raw.(*VIP)
	switch op {
	case VIPAllocate:
		a, err := netip.ParseAddr(ip)
		if err != nil || !a.Is4() {
			return fmt.Errorf("%w: VIP %q for %s is not an IPv4 address", ErrInvalid, ip, service)
		}
		ip = a.String()
		if old != nil {
			if old.IP == ip {
				return nil
			}
			return fmt.Errorf("%w: service %s already has %s", ErrVIPTaken, old.Service, old.IP)
		}
		if raw, err := tx.First(tableVIPs, "ip", ip); err != nil {
			return err
		} else if raw != nil {
			return fmt.Errorf("%w: %s belongs to service %s", ErrVIPTaken, ip, raw.(*VIP).Service)
		}
		if err := tx.Insert(tableVIPs, &VIP{Service: service, IP: ip, CreateIndex: idx, ModifyIndex: idx}); err != nil {
			return err
		}
	case VIPFree:
		if old == nil {
			return nil
		}
		if err := tx.Delete(tableVIPs, old); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: unknown VIP operation %q", ErrInvalid, op)
	}
	if err := bumpIndex(tx, idx, tableVIPs); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// VIPs lists every allocation, by service name.
func (s *Store) VIPs(ws memdb.WatchSet) (uint64, []*VIP, error) {
	tx := s.readTxn(ws)
	vips, err := collect[VIP](ws, tx, tableVIPs, "id")
	return maxIndex(tx, tableVIPs), vips, err
}

// ServiceVIP returns a service's VIP (case-insensitive), or nil.
func (s *Store) ServiceVIP(ws memdb.WatchSet, service string) (uint64, *VIP, error) {
	tx := s.readTxn(ws)
	ch, raw, err := tx.FirstWatch(tableVIPs, "id", service)
	if ws != nil {
		ws.Add(ch)
	}
	idx := maxIndex(tx, tableVIPs)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*VIP), nil
}

// ServiceNames lists the name of every mesh service (one with an
// instance that is InMesh: proxy and gateway records and the servers' own
// service get no VIP), one spelling per case-insensitive name (the first
// by node and ID), sorted.
func (s *Store) ServiceNames(ws memdb.WatchSet) (uint64, []string, error) {
	tx := s.readTxn(ws)
	insts, err := collect[Instance](ws, tx, tableInstances, "id")
	if err != nil {
		return 0, nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, in := range insts {
		k := strings.ToLower(in.Service)
		if k == "" || seen[k] || !in.InMesh() {
			continue
		}
		seen[k] = true
		out = append(out, in.Service)
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	return maxIndex(tx, tableInstances), out, nil
}
