package dns

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// The DNS server answers the mesh's names from the local catalog, as
// Consul's agent does, and forwards every other name to the host's own
// resolvers, so a host can point its resolver at the agent:
//
//	<svc>.mesh                         A: the service's VIP
//	<svc>.virtual[.<dc>].consul        A: the service's VIP
//	[<tag>.]<svc>.service[.<dc>].consul A/AAAA: instances' addresses; SRV
//	_<svc>._<tag|tcp>.service[.<dc>].consul  (RFC 2782 form)
//	<node>.node[.<dc>].consul          A/AAAA: the node's address
//	<hex-ip>.addr[.<dc>].consul        the address it encodes (SRV targets)
//
// Unknown names in these zones are NXDOMAIN; a name of another datacenter
// too (one datacenter per cluster).

// ErrDNS prefixes the DNS server's errors.
var ErrDNS = errors.New("discovery: dns")

// DNS defaults.
const (
	DefaultVIPTTL = 30 * time.Second
	// recursorTimeout bounds one exchange with one recursor.
	recursorTimeout = 2 * time.Second
	maxUDPSize      = 4096
)

// Config configures a Server.
type Config struct {
	// Addr is the IP:port to serve on, UDP and TCP (port 0: any free one,
	// the same for both; see Server.Addr).
	Addr       string
	Datacenter string
	// Recursors are IP:port addresses that names outside our zones are
	// forwarded to, tried in order. None: such names are SERVFAIL.
	Recursors []string
	// TTLs of service (instance), node and VIP answers.
	ServiceTTL, NodeTTL, VIPTTL time.Duration
	// OnlyPassing leaves out warning instances too, not only critical ones.
	OnlyPassing bool
	// Dialer, when set, opens the sockets to the recursors: with DNS
	// capture on, mesh gives one that marks them (SO_MARK) so the rules
	// do not send the agent's own queries back to itself.
	Dialer *net.Dialer
	// RecursionAllowed are the networks whose clients may have names
	// forwarded to the recursors, besides this host's own addresses
	// (policy.go); everyone else gets REFUSED for them.
	RecursionAllowed []netip.Prefix
	// RateLimit is how many queries per second each source may send
	// (0: no limit), RateBurst how many at once (0: twice RateLimit).
	// This host's own addresses are not limited (policy.go).
	RateLimit float64
	RateBurst int
	// LocalAddrs lists this host's addresses (nil: its interfaces').
	LocalAddrs func() ([]netip.Addr, error)
	Metrics    *Metrics
	Logger     *slog.Logger
	// ACL, when set, is the Authorizer DNS answers with (the agent's
	// default token, else the anonymous token): a service needs
	// service:read, a node node:read, and an instance both. Nil: ACLs
	// off, everything is answered.
	ACL func() (*acl.Authorizer, error)
}

// Server serves the catalog over DNS.
type Server struct {
	cfg    Config
	store  *discovery.Store
	logger *slog.Logger

	udp, tcp *mdns.Server
	addr     string
	wg       sync.WaitGroup
	once     sync.Once

	local   *localAddrs
	limiter *limiter
}

// NewServer returns a server over store; nothing listens until Start.
func NewServer(store *discovery.Store, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Datacenter = strings.ToLower(cfg.Datacenter)
	if cfg.LocalAddrs == nil {
		cfg.LocalAddrs = interfaceAddrs
	}
	return &Server{cfg: cfg, store: store, logger: cfg.Logger,
		local: &localAddrs{list: cfg.LocalAddrs}, limiter: newLimiter(cfg.RateLimit, cfg.RateBurst)}
}

// RecursorAddr normalizes a recursor: an IP gets port 53.
func RecursorAddr(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.String(), nil
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil && a.Zone() == "" {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	return "", fmt.Errorf("%w: recursor %q is not an IP or IP:port", ErrDNS, s)
}

// ResolvConfRecursors reads the name servers of a resolv.conf (the
// host's resolvers, read once at start).
func ResolvConfRecursors(path string) ([]string, error) {
	cc, err := mdns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrDNS, path, err)
	}
	var out []string
	for _, s := range cc.Servers {
		if a, err := RecursorAddr(net.JoinHostPort(s, cc.Port)); err == nil {
			out = append(out, a)
		}
	}
	return out, nil
}

// Start listens on UDP and TCP and serves until Close.
func (s *Server) Start(_ context.Context) (err error) {
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	pc, ln, err := listenUDPTCP(s.cfg.Addr)
	if err != nil {
		return err
	}
	s.addr = pc.LocalAddr().String()
	// Never forward to ourselves: a host whose resolv.conf already names
	// this agent would loop.
	recs := s.cfg.Recursors[:0:0]
	for _, r := range s.cfg.Recursors {
		if r != s.addr {
			recs = append(recs, r)
		}
	}
	s.cfg.Recursors = recs
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	s.udp = &mdns.Server{PacketConn: pc, Net: "udp", Handler: s, NotifyStartedFunc: notify, UDPSize: maxUDPSize}
	s.tcp = &mdns.Server{Listener: ln, Net: "tcp", Handler: s, NotifyStartedFunc: notify}
	for _, srv := range []*mdns.Server{s.udp, s.tcp} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				s.logger.Error("DNS server stopped", "net", srv.Net, "err", err)
				notify()
			}
		}()
	}
	<-started
	<-started
	return nil
}

// listenUDPTCP opens UDP and TCP on one port; with port 0 it retries
// until a free UDP port is free on TCP too.
func listenUDPTCP(addr string) (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 10 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: listening on udp %s: %w", ErrDNS, addr, err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = fmt.Errorf("%w: listening on tcp %s: %w", ErrDNS, pc.LocalAddr(), err)
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			break
		}
	}
	return nil, nil, lastErr
}

// Addr is the address the server listens on (UDP and TCP), once started.
func (s *Server) Addr() string { return s.addr }

// Close stops serving. It tolerates a partial Start.
func (s *Server) Close() error {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, srv := range []*mdns.Server{s.udp, s.tcp} {
			if srv == nil {
				continue
			}
			if err := srv.ShutdownContext(ctx); err != nil {
				// Not started: close what it would have served.
				if srv.PacketConn != nil {
					srv.PacketConn.Close()
				}
				if srv.Listener != nil {
					srv.Listener.Close()
				}
			}
		}
		s.wg.Wait()
	})
	return nil
}

// ServeDNS answers one query, within its source's rate limit; names
// outside our zones only for clients that may have them forwarded
// (policy.go).
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	tcp := isTCP(w.RemoteAddr())
	src := sourceOf(w.RemoteAddr())
	local := s.local.local(src)
	if !local && !s.limiter.allow(src, time.Now()) {
		if !tcp {
			s.cfg.Metrics.limited("udp")
			return // dropped: an answer to a spoofed source is a reflection
		}
		s.cfg.Metrics.limited("tcp")
		m := new(mdns.Msg)
		m.SetRcode(req, mdns.RcodeRefused)
		w.WriteMsg(m)
		return
	}
	recursion := local || s.recursionAllowed(src)
	resp := s.answer(req, recursion)
	if resp == nil && !recursion {
		s.cfg.Metrics.refusedRecursion()
		s.logger.Debug("DNS: recursion refused", "client", src, "name", qname(req))
		resp = new(mdns.Msg)
		resp.SetRcode(req, mdns.RcodeRefused)
	}
	if resp == nil {
		resp = s.forward(req)
	}
	if !tcp {
		size := mdns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = min(max(int(o.UDPSize()), mdns.MinMsgSize), maxUDPSize)
		}
		resp.Truncate(size)
	}
	if err := w.WriteMsg(resp); err != nil {
		s.logger.Debug("writing a DNS answer", "err", err)
	}
}

func isTCP(a net.Addr) bool {
	_, ok := a.(*net.TCPAddr)
	return ok
}

// zones the server is authoritative for.
var zones = []string{"consul.", "mesh."}

func zoneOf(name string) string {
	for _, z := range zones {
		if name == z || strings.HasSuffix(name, "."+z) {
			return z
		}
	}
	return ""
}

// recursionAllowed says whether a client off this host may have names
// forwarded: its address is in Config.RecursionAllowed.
func (s *Server) recursionAllowed(src netip.Addr) bool {
	for _, p := range s.cfg.RecursionAllowed {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// answer answers a query in our zones, or returns nil to forward it;
// recursion says whether this client may have it forwarded.
func (s *Server) answer(req *mdns.Msg, recursion bool) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Compress = true
	m.RecursionAvailable = recursion && len(s.cfg.Recursors) > 0
	if o := req.IsEdns0(); o != nil {
		m.SetEdns0(min(max(o.UDPSize(), mdns.MinMsgSize), maxUDPSize), false)
	}
	if req.Opcode != mdns.OpcodeQuery || len(req.Question) != 1 {
		m.SetRcode(req, mdns.RcodeNotImplemented)
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(mdns.Fqdn(q.Name))
	zone := zoneOf(name)
	if zone == "" {
		return nil
	}
	if q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY {
		m.SetRcode(req, mdns.RcodeNameError)
		return m
	}
	m.Authoritative = true
	labels := mdns.SplitDomainName(strings.TrimSuffix(name, zone))
	found := false
	if zone == "mesh." {
		found = len(labels) == 1 && s.vipAnswer(m, q, labels[0])
	} else {
		found = s.consulAnswer(m, q, labels)
	}
	switch {
	case len(labels) == 0 && (q.Qtype == mdns.TypeSOA || q.Qtype == mdns.TypeANY):
		m.Answer = []mdns.RR{soa(zone)}
	case !found && len(labels) > 0:
		m.SetRcode(req, mdns.RcodeNameError)
		m.Ns = []mdns.RR{soa(zone)}
	case len(m.Answer) == 0:
		// The name exists (or is the zone itself) but has no records of
		// this type: NODATA.
		m.Ns = []mdns.RR{soa(zone)}
	}
	return m
}

// soa is the zone's SOA, sent with negative answers; its minimum TTL of
// 0 keeps resolvers from caching a name that is about to appear.
func soa(zone string) mdns.RR {
	return &mdns.SOA{
		Hdr: mdns.RR_Header{Name: zone, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 0},
		Ns:  "ns." + zone, Mbox: "hostmaster." + zone,
		Serial: uint32(time.Now().Unix()), Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 0,
	}
}

func ttl(d time.Duration) uint32 { return uint32(max(d, 0) / time.Second) }

// addrRR returns an A or AAAA record for ip if qtype asks for it.
func addrRR(name string, qtype uint16, ip netip.Addr, t uint32) mdns.RR {
	ip = ip.Unmap()
	hdr := mdns.RR_Header{Name: name, Class: mdns.ClassINET, Ttl: t}
	switch {
	case ip.Is4() && (qtype == mdns.TypeA || qtype == mdns.TypeANY):
		hdr.Rrtype = mdns.TypeA
		return &mdns.A{Hdr: hdr, A: ip.AsSlice()}
	case ip.Is6() && (qtype == mdns.TypeAAAA || qtype == mdns.TypeANY):
		hdr.Rrtype = mdns.TypeAAAA
		return &mdns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()}
	}
	return nil
}

func (s *Server) vipAnswer(m *mdns.Msg, q mdns.Question, service string) bool {
	_, v, err := s.store.ServiceVIP(nil, service)
	if err != nil || v == nil {
		return false
	}
	if ip, err := netip.ParseAddr(v.IP); err == nil {
		if rr := addrRR(q.Name, q.Qtype, ip, ttl(s.cfg.VIPTTL)); rr != nil {
			m.Answer = append(m.Answer, rr)
		}
	}
	return true
}

// consulAnswer answers a name under consul.; labels exclude "consul".
func (s *Server) consulAnswer(m *mdns.Msg, q mdns.Question, labels []string) bool {
	n := len(labels)
	if n == 0 {
		return true // the zone apex: NODATA
	}
	// An optional datacenter follows the kind.
	kinds := map[string]bool{"service": true, "node": true, "virtual": true, "addr": true}
	if n >= 2 && !kinds[labels[n-1]] && kinds[labels[n-2]] {
		if labels[n-1] != s.cfg.Datacenter {
			return false
		}
		labels, n = labels[:n-1], n-1
	}
	kind, rest := labels[n-1], labels[:n-1]
	switch {
	case kind == "service" && len(rest) == 2 && strings.HasPrefix(rest[0], "_") && strings.HasPrefix(rest[1], "_"):
		// RFC 2782: _service._tag (or _tcp: no tag).
		tag := strings.TrimPrefix(rest[1], "_")
		if tag == "tcp" {
			tag = ""
		}
		return s.serviceAnswer(m, q, strings.TrimPrefix(rest[0], "_"), tag)
	case kind == "service" && len(rest) == 1:
		return s.serviceAnswer(m, q, rest[0], "")
	case kind == "service" && len(rest) == 2:
		return s.serviceAnswer(m, q, rest[1], rest[0])
	case kind == "virtual" && len(rest) == 1:
		return s.vipAnswer(m, q, rest[0])
	case kind == "node" && len(rest) == 1:
		return s.nodeAnswer(m, q, rest[0])
	case kind == "addr" && len(rest) == 1:
		ip, ok := decodeAddrLabel(rest[0])
		if ok {
			if rr := addrRR(q.Name, q.Qtype, ip, ttl(s.cfg.NodeTTL)); rr != nil {
				m.Answer = append(m.Answer, rr)
			}
		}
		return ok
	}
	return false
}

// findNode looks a node up by name, ignoring case as DNS does.
func (s *Server) findNode(name string) *discovery.Node {
	if _, n, _, err := s.store.Node(nil, name); err == nil && n != nil {
		return n
	}
	_, nodes, err := s.store.Nodes(nil)
	if err != nil {
		return nil
	}
	for _, n := range nodes {
		if strings.EqualFold(n.Name, name) {
			return n
		}
	}
	return nil
}

// authorizer is what DNS may read now; nil means nothing (an ACL
// resolution that failed denies, it never opens).
func (s *Server) authorizer() *acl.Authorizer {
	if s.cfg.ACL == nil {
		return acl.ManageAll("")
	}
	authz, err := s.cfg.ACL()
	if err != nil {
		s.logger.Warn("DNS: resolving the default ACL token", "err", err)
		return nil
	}
	return authz
}

func (s *Server) nodeAnswer(m *mdns.Msg, q mdns.Question, name string) bool {
	n := s.findNode(name)
	if n == nil {
		return false
	}
	if authz := s.authorizer(); authz == nil || authz.NodeRead(n.Name) != nil {
		return false
	}
	if ip, err := netip.ParseAddr(n.Address); err == nil {
		if rr := addrRR(q.Name, q.Qtype, ip, ttl(s.cfg.NodeTTL)); rr != nil {
			m.Answer = append(m.Answer, rr)
		}
	}
	return true
}

// serviceAnswer answers a service lookup with the instances that are
// passing (or, without OnlyPassing, not critical), shuffled.
func (s *Server) serviceAnswer(m *mdns.Msg, q mdns.Question, service, tag string) bool {
	var tags []string
	if tag != "" {
		tags = []string{tag}
	}
	authz := s.authorizer()
	if authz == nil || authz.ServiceRead(service) != nil {
		return false
	}
	_, entries, err := s.store.CheckServiceNodes(nil, service, tags, s.cfg.OnlyPassing)
	if err != nil {
		s.logger.Warn("DNS: reading the catalog", "service", service, "err", err)
		return false
	}
	entries = slices.DeleteFunc(entries, func(e discovery.ServiceEntry) bool {
		return e.Node != nil && authz.NodeRead(e.Node.Name) != nil
	})
	if len(entries) == 0 {
		// A service the catalog knows, with nobody healthy: NODATA, so a
		// client does not cache a "no such name".
		_, all, _ := s.store.ServiceNodes(nil, service, nil)
		return len(all) > 0
	}
	rand.Shuffle(len(entries), func(i, j int) { entries[i], entries[j] = entries[j], entries[i] })
	t := ttl(s.cfg.ServiceTTL)
	seenExtra := map[string]bool{}
	for _, e := range entries {
		if !s.cfg.OnlyPassing && discovery.AggregatedStatus(e.Checks) == discovery.HealthCritical {
			continue
		}
		addr := e.Instance.Address
		nodeAddr := ""
		if e.Node != nil {
			nodeAddr = e.Node.Address
		}
		if addr == "" {
			addr = nodeAddr
		}
		ip, err := netip.ParseAddr(addr)
		if err != nil {
			continue // a host name: no address record to give
		}
		if q.Qtype != mdns.TypeSRV {
			if rr := addrRR(q.Name, q.Qtype, ip, t); rr != nil {
				m.Answer = append(m.Answer, rr)
			}
			continue
		}
		// SRV: the target names the node when the instance uses the
		// node's address; otherwise the address itself (Consul's
		// <hex>.addr form), so two instances on one node with different
		// addresses never share a target.
		target := ""
		if e.Node != nil && addr == nodeAddr {
			target = e.Node.Name + ".node." + s.cfg.Datacenter + ".consul."
		} else {
			target = encodeAddrLabel(ip) + ".addr." + s.cfg.Datacenter + ".consul."
		}
		weight := e.Instance.Weights.Passing
		if discovery.AggregatedStatus(e.Checks) == discovery.HealthWarning {
			weight = e.Instance.Weights.Warning
		}
		m.Answer = append(m.Answer, &mdns.SRV{
			Hdr:      mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeSRV, Class: mdns.ClassINET, Ttl: t},
			Priority: 1, Weight: uint16(min(max(weight, 1), 65535)), Port: uint16(e.Instance.Port), Target: target,
		})
		if !seenExtra[target] {
			seenExtra[target] = true
			if rr := addrRR(target, mdns.TypeANY, ip, t); rr != nil {
				m.Extra = append(m.Extra, rr)
			}
		}
	}
	return true
}

// encodeAddrLabel is Consul's hex form of an address in .addr. names.
func encodeAddrLabel(ip netip.Addr) string {
	ip = ip.Unmap()
	return hex.EncodeToString(ip.AsSlice())
}

func decodeAddrLabel(s string) (netip.Addr, bool) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return netip.Addr{}, false
	}
	ip, ok := netip.AddrFromSlice(b)
	return ip, ok
}

// forward sends a query outside our zones to the recursors in order; the
// first answer wins. It asks over UDP and again over TCP when the answer
// was truncated (the client's own transport then decides whether it gets
// all of it). No recursor, or none answering: SERVFAIL.
func (s *Server) forward(req *mdns.Msg) *mdns.Msg {
	udp := &mdns.Client{Net: "udp", Timeout: recursorTimeout, UDPSize: maxUDPSize, Dialer: s.cfg.Dialer}
	tcp := &mdns.Client{Net: "tcp", Timeout: recursorTimeout, Dialer: s.cfg.Dialer}
	for _, r := range s.cfg.Recursors {
		resp, _, err := udp.Exchange(req, r)
		if err == nil && resp != nil && resp.Truncated {
			resp, _, err = tcp.Exchange(req, r)
		}
		if err == nil && resp != nil && resp.Rcode != mdns.RcodeServerFailure && resp.Rcode != mdns.RcodeRefused {
			resp.Id = req.Id
			resp.Compress = true
			return resp
		}
		s.logger.Debug("DNS recursor failed", "recursor", r, "name", qname(req), "err", errOrRcode(err, resp))
	}
	m := new(mdns.Msg)
	m.SetRcode(req, mdns.RcodeServerFailure)
	m.RecursionAvailable = len(s.cfg.Recursors) > 0
	return m
}

func qname(req *mdns.Msg) string {
	if len(req.Question) == 0 {
		return ""
	}
	return req.Question[0].Name
}

func errOrRcode(err error, resp *mdns.Msg) string {
	if err != nil {
		return err.Error()
	}
	if resp == nil {
		return "no answer"
	}
	return "rcode " + strconv.Itoa(resp.Rcode) + " " + mdns.RcodeToString[resp.Rcode]
}
