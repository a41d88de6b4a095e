package raft

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"
	"google.golang.org/grpc/credentials"
)

// ALPN protocols multiplexed on the cluster port: raft's own stream and
// gRPC (HTTP/2) for the cluster RPC.
const (
	alpnRaft = "vmesh-raft/1"
	alpnRPC  = "h2"
)

// handshakeTimeout bounds a TLS handshake on the cluster port, so a client
// that connects and says nothing cannot hold a goroutine.
const handshakeTimeout = 10 * time.Second

// clusterListener is the cluster port: one TCP listener, mutual TLS, and an
// ALPN split into raft connections and RPC connections. A connection with
// a client certificate from another CA, or no TLS at all, fails the
// handshake; raft connections must also present a node certificate of this
// cluster. RPC connections may come without a certificate (a joining node
// has none yet); each RPC checks what it needs. An expired node
// certificate passes the handshake (it may still renew itself, within
// grace); raft and every RPC but RenewNode refuse it (admitPeer).
type clusterListener struct {
	ln     net.Listener
	id     *Identity
	grace  time.Duration
	logger *slog.Logger
	raft   chan net.Conn
	rpc    chan net.Conn
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

func listenCluster(bind string, id *Identity, grace time.Duration, logger *slog.Logger) (*clusterListener, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listening on the cluster port %s: %w", bind, err)
	}
	l := &clusterListener{
		ln: ln, id: id, grace: grace, logger: logger,
		raft: make(chan net.Conn), rpc: make(chan net.Conn), done: make(chan struct{}),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

func (l *clusterListener) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The current pair: a renewal reaches the next handshake.
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return l.id.tlsCertificate(), nil },
		NextProtos:     []string{alpnRaft, alpnRPC},
		ClientAuth:     tls.RequestClientCert,
		// A certificate, when given, must be a node certificate of this
		// cluster's CA: anything else fails the handshake.
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			_, err := l.id.verifyPeer(raw, useHandshake, time.Now(), l.grace)
			return err
		},
	}
}

func (l *clusterListener) acceptLoop() {
	defer l.wg.Done()
	cfg := l.serverTLS()
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.logger.Error("cluster port accept failed", "err", err)
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.handshake(tls.Server(conn, cfg))
		}()
	}
}

func (l *clusterListener) handshake(conn *tls.Conn) {
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := conn.Handshake(); err != nil {
		l.logger.Debug("cluster port: refused a connection", "remote", conn.RemoteAddr(), "err", err)
		conn.Close()
		return
	}
	conn.SetDeadline(time.Time{})
	st := conn.ConnectionState()
	var ch chan net.Conn
	switch st.NegotiatedProtocol {
	case alpnRaft:
		if len(st.PeerCertificates) == 0 {
			l.logger.Warn("cluster port: raft connection without a node certificate refused", "remote", conn.RemoteAddr())
			conn.Close()
			return
		}
		cert := st.PeerCertificates[0]
		name, err := nodeNameFromCert(cert)
		if err == nil {
			err = l.id.admitPeer(name, cert, useCluster, time.Now(), l.grace)
		}
		if err != nil {
			l.logger.Warn("cluster port: raft connection refused", "remote", conn.RemoteAddr(), "err", err)
			conn.Close()
			return
		}
		ch = l.raft
	case alpnRPC:
		ch = l.rpc
	default:
		l.logger.Debug("cluster port: unknown protocol refused", "remote", conn.RemoteAddr(), "alpn", st.NegotiatedProtocol)
		conn.Close()
		return
	}
	select {
	case ch <- conn:
	case <-l.done:
		conn.Close()
	}
}

func (l *clusterListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.ln.Close()
	})
	l.wg.Wait()
	return err
}

// Addr is the bound address (with the real port when bind said :0).
func (l *clusterListener) Addr() net.Addr { return l.ln.Addr() }

// chanListener is a net.Listener fed by the ALPN split.
type chanListener struct {
	ch     chan net.Conn
	done   chan struct{} // the cluster listener's
	addr   net.Addr
	once   sync.Once
	closed chan struct{}
}

func newChanListener(ch chan net.Conn, done chan struct{}, addr net.Addr) *chanListener {
	return &chanListener{ch: ch, done: done, addr: addr, closed: make(chan struct{})}
}

func (c *chanListener) Accept() (net.Conn, error) {
	select {
	case conn := <-c.ch:
		return conn, nil
	case <-c.done:
		return nil, net.ErrClosed
	case <-c.closed:
		return nil, net.ErrClosed
	}
}

// Close stops Accept; the clusterListener owns the socket.
func (c *chanListener) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
func (c *chanListener) Addr() net.Addr { return c.addr }

// clientTLS is what this node presents when it dials a peer: its current
// node certificate (even expired: RenewNode takes it within the grace),
// and it accepts only a node certificate of the same CA, valid now.
func (id *Identity) clientTLS(alpn string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.tlsCertificate(), nil
		},
		NextProtos: []string{alpn},
		// Node certificates name SPIFFE IDs, not host names: the chain is
		// verified against the cluster CA below instead of by host name.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := id.VerifyPeer(raw)
			return err
		},
	}
}

// streamLayer is hashicorp/raft's transport over the cluster port.
type streamLayer struct {
	*chanListener
	id        *Identity
	advertise net.Addr

	// inbound are the raft connections peers opened to this node.
	// hashicorp/raft's Close leaves them to their readers, which wait on
	// the peer; closeInbound ends them when this node stops.
	mu      sync.Mutex
	inbound map[net.Conn]struct{}
	closed  bool
}

func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.chanListener.Accept()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if s.inbound == nil {
		s.inbound = map[net.Conn]struct{}{}
	}
	s.inbound[c] = struct{}{}
	return &trackedConn{Conn: c, layer: s}, nil
}

func (s *streamLayer) closeInbound() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.inbound {
		c.Close()
	}
	s.inbound = nil
}

type trackedConn struct {
	net.Conn
	layer *streamLayer
}

func (c *trackedConn) Close() error {
	c.layer.mu.Lock()
	delete(c.layer.inbound, c.Conn)
	c.layer.mu.Unlock()
	return c.Conn.Close()
}

func (s *streamLayer) Addr() net.Addr { return s.advertise }

func (s *streamLayer) Dial(addr hraft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return tls.DialWithDialer(d, "tcp", string(addr), s.id.clientTLS(alpnRaft))
}

// handshakenCreds are gRPC server credentials for connections the cluster
// listener has already authenticated: they only report the TLS state so
// handlers can read the peer's certificate.
type handshakenCreds struct{}

func (handshakenCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, nil, errors.New("raft: cluster RPC connection is not TLS")
	}
	return c, credentials.TLSInfo{
		State:          tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

func (handshakenCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("raft: handshakenCreds is server-only")
}

func (handshakenCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}
func (c handshakenCreds) Clone() credentials.TransportCredentials { return c }

// jsonCodec carries the cluster RPC's messages: small Go structs, so no
// generated protobuf code is needed. The service is still plain gRPC.
type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error) {
	if ev, ok := v.(encodedEvent); ok { // the replica stream's, encoded once for every subscriber
		return ev, nil
	}
	return json.Marshal(v)
}
func (jsonCodec) Unmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
func (jsonCodec) Name() string                    { return "json" }

func (handshakenCreds) OverrideServerName(string) error { return nil }
