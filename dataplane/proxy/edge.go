package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The edge of an HTTP connection manager: every downstream connection it
// serves is read through an edgeConn, below net/http, which enforces what
// net/http does not.
//
// HTTP/2 (the connection starts with the client preface): net/http
// already bounds concurrent streams, header list size and a CONTINUATION
// sequence's bytes, and runs at most MaxConcurrentStreams handlers; but a
// client that opens streams and resets them at once (rapid reset,
// CVE-2023-44487) still makes it start a handler, and so an upstream
// request, for each, and a HEADERS frame followed by empty CONTINUATION
// frames is read forever. edgeConn reads the frame headers going by and,
// like Envoy, cuts a connection whose streams are mostly reset by the
// client within a second of opening (premature resets), or whose header
// block runs over maxContinuationFrames CONTINUATION frames: it sends
// GOAWAY (ENHANCE_YOUR_CALM) between two of the server's frames, and
// closes the connection.
//
// HTTP/1: net/http accepts a request with both Content-Length and
// Transfer-Encoding (it drops the length), folded header lines (it joins
// them) and lines ending in a bare LF. Another server on the path may
// frame such a request differently, which is how requests are smuggled.
// edgeConn holds each request head until it is complete, checks it, and
// hands net/http a request line it answers with 400 (closing the
// connection) instead of a head that breaks the rules. It follows the
// body's framing (Content-Length or chunked, whose syntax it checks too)
// to find the next head, and stops looking once a request asks for a
// protocol switch (the stream closes the connection unless it switched).

// Limits of the HTTP/2 edge.
const (
	// prematureResetWindow: a stream the client resets sooner than this
	// after opening it is a premature reset (Envoy's default, 1 s).
	prematureResetWindow = time.Second
	// prematureResetStreams: a connection whose premature resets reach
	// half of this is cut; past this many streams, one whose premature
	// resets reach half of its streams is (Envoy's rule, with 500).
	prematureResetStreams = 200
	// maxContinuationFrames bounds the CONTINUATION frames of one header
	// block: a header list that fits the limit needs a few.
	maxContinuationFrames = 64
	// goAwayGrace bounds sending GOAWAY and draining the client's
	// frames afterwards; then the connection is closed regardless.
	goAwayGrace = time.Second
)

// maxRequestHead is the longest request head the edge holds: net/http
// refuses a longer one itself (431), so past it the edge lets the bytes
// through to be refused.
const maxRequestHead = maxRequestHeaderBytes + 4096

// Reasons a connection is cut or a request refused at the edge: the
// values of vmesh_downstream_protocol_errors_total's reason label.
const (
	reasonRapidReset        = "h2_rapid_reset"
	reasonContinuationFlood = "h2_continuation_flood"
	reasonCLTE              = "h1_content_length_and_transfer_encoding"
	reasonObsFold           = "h1_obs_fold"
	reasonBareLF            = "h1_bare_lf"
	reasonBareCR            = "h1_bare_cr"
	reasonTransferEncoding  = "h1_transfer_encoding"
	reasonContentLength     = "h1_content_length"
	reasonMalformed         = "h1_malformed_head"
	reasonChunked           = "h1_malformed_chunked_body"
)

// errEdge is what net/http reads once the edge cut a connection.
var errEdge = errors.New("proxy: connection cut at the edge")

// rejectedHead replaces a refused request head: net/http cannot parse its
// request line, answers 400 and closes the connection.
var rejectedHead = []byte("REFUSED\r\n\r\n")

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

type edgeMode int

const (
	modeDetect  edgeMode = iota // the first bytes: HTTP/2's preface or not
	modeHead                    // an HTTP/1 request head
	modeLength                  // an HTTP/1 body of a known length
	modeChunked                 // an HTTP/1 chunked body
	modeH2                      // HTTP/2 frames
	modePassive                 // nothing more to check (a protocol switch)
)

// HTTP/2 frame types and flags the edge reads.
const (
	frameHeaders       = 0x1
	frameRSTStream     = 0x3
	frameGoAway        = 0x7
	frameContinuation  = 0x9
	flagEndHeaders     = 0x4
	errEnhanceYourCalm = 0xb
)

// edgeConn is a downstream connection as net/http reads and writes it.
type edgeConn struct {
	net.Conn
	// report counts and logs a cut or a refusal; called once per
	// connection for HTTP/2, once per refused request for HTTP/1.
	report func(reason string)

	// Read side (net/http reads from one goroutine at a time; rmu makes
	// that a rule).
	rmu  sync.Mutex
	mode edgeMode
	// out is what net/http reads next, before anything else.
	out []byte
	// head holds a request head until it is complete (or the first
	// bytes until the protocol is known), and what came after it.
	head    []byte
	rerr    error
	drained bool
	small   [512]byte // for reads net/http makes with a tiny buffer
	// linger: a request was refused; closing drains the client's bytes
	// first, so its 400 is not lost to a reset.
	linger atomic.Bool
	// HTTP/1 body framing: the bytes left of a body or chunk.
	left    int64
	chunk   chunkState
	sizeLen int // hex digits of the current chunk size
	// HTTP/2, the client's frames.
	rf        frameReader
	opened    map[uint32]time.Time // streams opened, by id (swept after the window)
	sweepAt   int
	streams   int // streams opened
	premature int // premature resets
	lastID    uint32
	conts     int // CONTINUATION frames of the header block being read

	// Write side: in HTTP/2, where the server's frames begin, so a
	// GOAWAY goes between two of them.
	h2        atomic.Bool
	wmu       sync.Mutex
	wf        frameReader
	wdead     atomic.Bool // GOAWAY sent, or the connection closed: no more writes
	goAwayDue bool        // send GOAWAY at the end of the frame being written
	goAwayID  uint32
	cutOnce   sync.Once
	cut       chan struct{} // closed once GOAWAY went out, or cannot
}

func newEdgeConn(c net.Conn, report func(reason string)) *edgeConn {
	return &edgeConn{Conn: c, report: report, cut: make(chan struct{})}
}

// Read hands net/http the connection's bytes, checked.
func (g *edgeConn) Read(p []byte) (int, error) {
	g.rmu.Lock()
	defer g.rmu.Unlock()
	for {
		if len(g.out) > 0 {
			n := copy(p, g.out)
			g.out = g.out[n:]
			if len(g.out) == 0 {
				g.out = nil
			}
			return n, nil
		}
		if g.rerr != nil {
			if g.rerr == errEdge && g.h2.Load() && !g.drained {
				g.drained = true
				g.drain()
			}
			return 0, g.rerr
		}
		if len(p) == 0 {
			return 0, nil
		}
		buf := p
		small := len(p) < len(g.small) && (g.mode == modeHead || g.mode == modeDetect)
		if small {
			// net/http's one-byte read that watches for the client going
			// away while a handler runs: a head is held whole anyway.
			buf = g.small[:]
		}
		n, err := g.Conn.Read(buf)
		if n > 0 {
			k := g.feed(buf[:n])
			if k > 0 && small {
				// Checked in g.small: out, before what feed put there.
				g.out = append(append(make([]byte, 0, k+len(g.out)), buf[:k]...), g.out...)
				continue
			}
			if k > 0 {
				return k, nil
			}
			continue // held: a head not complete yet, or out to deliver
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// A deadline (net/http ends its watch with one): the
			// connection goes on, and so does a head held.
			return 0, err
		}
		if err != nil && len(g.head) > 0 && g.rerr == nil {
			// A head cut short: net/http sees what there was.
			g.out, g.head = g.head, nil
			g.rerr = err
			continue
		}
		return 0, err
	}
}

// feed checks b, just read: b[:k] goes to net/http as it is; the rest is
// held (a request head), its checked bytes moving to out, or dropped
// after a violation (rerr set).
func (g *edgeConn) feed(b []byte) int {
	i := 0
	for {
		i += g.scan(b[i:])
		if i == len(b) || g.rerr != nil {
			return i
		}
		// At the start of the connection or of a request head. What is
		// whole in b is checked where it is (the usual case: no copy).
		if len(g.head) == 0 {
			rest := b[i:]
			if g.mode == modeDetect {
				n := min(len(rest), len(h2Preface))
				switch {
				case !bytes.Equal(rest[:n], []byte(h2Preface[:n])):
					g.mode = modeHead
				case n == len(h2Preface):
					g.startH2()
					i += n
					continue
				}
			}
			if g.mode == modeHead {
				if end := headEnd(rest); end >= 0 {
					if !g.passHead(rest[:end]) {
						return i
					}
					i += end
					continue
				}
			}
		}
		g.head = append(g.head, b[i:]...)
		g.heads()
		return i
	}
}

// startH2 switches to HTTP/2, once the preface is seen: before net/http
// reads it, and so before the server writes its first frame.
func (g *edgeConn) startH2() {
	g.mode = modeH2
	g.opened = map[uint32]time.Time{}
	g.h2.Store(true)
}

// passHead checks a complete request head and sets the framing of what
// follows; a refused head is replaced in out by a request line net/http
// answers with 400, and false comes back.
func (g *edgeConn) passHead(head []byte) bool {
	h := checkHead(head)
	if h.reason != "" {
		g.report(h.reason)
		g.out = append(g.out, rejectedHead...)
		g.head = nil
		g.rerr = io.EOF
		g.linger.Store(true)
		return false
	}
	switch {
	case h.passive:
		g.mode = modePassive
	case h.chunked:
		g.mode, g.chunk, g.sizeLen, g.left = modeChunked, chunkSize, 0, 0
	case h.length > 0:
		g.mode, g.left = modeLength, h.length
	}
	return true
}

// scan checks b in the current mode, up to the start of a request head
// (or of the connection), a violation, or its end; it returns the bytes
// checked.
func (g *edgeConn) scan(b []byte) int {
	i := 0
	for i < len(b) && g.rerr == nil {
		switch g.mode {
		case modePassive:
			i = len(b)
		case modeH2:
			n, reason := g.frames(b[i:], time.Now())
			i += n
			if reason != "" {
				g.goAway(reason)
			}
		case modeLength:
			n := int(min(g.left, int64(len(b)-i)))
			i += n
			if g.left -= int64(n); g.left == 0 {
				g.mode = modeHead
			}
		case modeChunked:
			n, ok := g.chunked(b[i:])
			i += n
			if !ok {
				g.report(reasonChunked)
				g.rerr = errEdge
			}
		case modeDetect, modeHead:
			return i
		}
	}
	return i
}

// heads works through the held bytes: the protocol, each complete request
// head, and the bodies between them, moving what passed to out.
func (g *edgeConn) heads() {
	defer func() {
		if len(g.head) == 0 {
			g.head = nil
		}
	}()
	for len(g.head) > 0 && g.rerr == nil {
		switch g.mode {
		case modeDetect:
			n := min(len(g.head), len(h2Preface))
			switch {
			case !bytes.Equal(g.head[:n], []byte(h2Preface[:n])):
				g.mode = modeHead
			case n < len(h2Preface):
				return // not enough yet
			default:
				g.startH2()
				g.out = append(g.out, h2Preface...)
				g.head = g.head[len(h2Preface):]
			}
		case modeHead:
			end := headEnd(g.head)
			if end < 0 {
				if len(g.head) > maxRequestHead {
					// Too long to be served: net/http refuses it (431).
					g.out = append(g.out, g.head...)
					g.head = nil
					g.mode = modePassive
				}
				return
			}
			if !g.passHead(g.head[:end]) {
				return
			}
			g.out = append(g.out, g.head[:end]...)
			g.head = g.head[end:]
		default:
			k := g.scan(g.head)
			g.out = append(g.out, g.head[:k]...)
			g.head = g.head[k:]
		}
	}
}

// headEnd is the length of the request head at the start of b, its empty
// line included (-1: not complete). A line ends at LF, with or without a
// CR (a bare LF is refused later, once the head is complete).
func headEnd(b []byte) int {
	i := 0
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		line := b[i : i+j]
		if i > 0 && (len(line) == 0 || (len(line) == 1 && line[0] == '\r')) {
			return i + j + 1
		}
		i += j + 1
	}
}

// headVerdict is what a request head says about the connection.
type headVerdict struct {
	reason  string // refused, and why ("": fine)
	length  int64
	chunked bool
	passive bool // a protocol switch may follow: stop checking
}

// checkHead checks a complete request head (its empty line included),
// without allocating: it runs for every HTTP/1 request.
func checkHead(head []byte) headVerdict {
	var v headVerdict
	var cl, te []byte // the first values
	ncl, nte := 0, 0
	http11 := false
	for i, first := 0, true; i < len(head); first = false {
		j := bytes.IndexByte(head[i:], '\n')
		line := head[i : i+j]
		i += j + 1
		l, ok := bytes.CutSuffix(line, []byte("\r"))
		if !ok {
			return headVerdict{reason: reasonBareLF}
		}
		if bytes.IndexByte(l, '\r') >= 0 {
			return headVerdict{reason: reasonBareCR}
		}
		if i == len(head) {
			break // the empty line
		}
		if first {
			// METHOD SP target SP version
			m, rest, ok1 := bytes.Cut(l, []byte(" "))
			target, proto, ok2 := bytes.Cut(rest, []byte(" "))
			if !ok1 || !ok2 || len(m) == 0 || len(target) == 0 || bytes.IndexByte(proto, ' ') >= 0 || bytes.IndexByte(l, '\t') >= 0 {
				return headVerdict{reason: reasonMalformed}
			}
			http11 = string(proto) == "HTTP/1.1"
			v.passive = string(m) == "CONNECT"
			continue
		}
		if len(l) == 0 || l[0] == ' ' || l[0] == '\t' {
			return headVerdict{reason: reasonObsFold}
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok || bytes.ContainsAny(name, " \t") {
			return headVerdict{reason: reasonMalformed}
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("content-length")):
			if ncl++; ncl == 1 {
				cl = value
			} else if !bytes.Equal(value, cl) {
				return headVerdict{reason: reasonContentLength}
			}
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			if nte++; nte == 1 {
				te = value
			}
		case bytes.EqualFold(name, []byte("upgrade")):
			if upgradeOffered(string(value)) {
				v.passive = true
			}
		}
	}
	switch {
	case nte > 0 && ncl > 0:
		return headVerdict{reason: reasonCLTE}
	case nte > 0:
		// Only "chunked", once, and not in HTTP/1.0 (which net/http
		// reads without it).
		if nte != 1 || !bytes.EqualFold(te, []byte("chunked")) || !http11 {
			return headVerdict{reason: reasonTransferEncoding}
		}
		v.chunked = true
	case ncl > 0:
		if len(cl) == 0 || len(cl) > 18 {
			return headVerdict{reason: reasonContentLength}
		}
		for _, c := range cl {
			if c < '0' || c > '9' {
				return headVerdict{reason: reasonContentLength}
			}
			v.length = v.length*10 + int64(c-'0')
		}
	}
	return v
}

// upgradeOffered reports whether an Upgrade header's value may switch the
// connection to another protocol: anything but h2c, which net/http never
// switches to (the stream drops the offer).
func upgradeOffered(value string) bool {
	value = strings.TrimSpace(value)
	return value != "" && !strings.EqualFold(value, "h2c")
}

// ---- Chunked bodies.

type chunkState int

const (
	chunkSize       chunkState = iota // hex digits
	chunkExt                          // after the size: extensions, up to CR
	chunkSizeLF                       // the size line's LF
	chunkData                         // g.left bytes of data
	chunkDataCR                       // the CR after the data
	chunkDataLF                       // and its LF
	chunkTrailerBOL                   // the start of a trailer line (or the end)
	chunkTrailer                      // in a trailer line
	chunkTrailerLF                    // a trailer line's LF
	chunkEndLF                        // the LF of the body's last line
)

// chunked follows a chunked body over b. It returns the bytes consumed
// and false on a syntax error (then the connection is not to be read
// further).
func (g *edgeConn) chunked(b []byte) (int, bool) {
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch g.chunk {
		case chunkSize:
			switch {
			case isHex(c):
				if g.sizeLen++; g.sizeLen > 15 {
					return i, false
				}
				g.left = g.left<<4 | int64(unhex(c))
			case g.sizeLen == 0:
				return i, false
			case c == '\r':
				g.chunk = chunkSizeLF
			case c == ';' || c == ' ' || c == '\t':
				g.chunk = chunkExt
			default:
				return i, false
			}
		case chunkExt:
			switch c {
			case '\r':
				g.chunk = chunkSizeLF
			case '\n':
				return i, false
			}
		case chunkSizeLF:
			if c != '\n' {
				return i, false
			}
			g.sizeLen = 0
			if g.left == 0 {
				g.chunk = chunkTrailerBOL
			} else {
				g.chunk = chunkData
			}
		case chunkData:
			n := int(min(g.left, int64(len(b)-i)))
			i += n - 1
			if g.left -= int64(n); g.left == 0 {
				g.chunk = chunkDataCR
			}
		case chunkDataCR:
			if c != '\r' {
				return i, false
			}
			g.chunk = chunkDataLF
		case chunkDataLF:
			if c != '\n' {
				return i, false
			}
			g.chunk = chunkSize
		case chunkTrailerBOL:
			switch c {
			case '\r':
				g.chunk = chunkEndLF
			case '\n', ' ', '\t':
				return i, false // a bare LF, or a folded line
			default:
				g.chunk = chunkTrailer
			}
		case chunkTrailer:
			switch c {
			case '\r':
				g.chunk = chunkTrailerLF
			case '\n':
				return i, false
			}
		case chunkTrailerLF:
			if c != '\n' {
				return i, false
			}
			g.chunk = chunkTrailerBOL
		case chunkEndLF:
			if c != '\n' {
				return i, false
			}
			g.mode = modeHead
			return i + 1, true
		}
	}
	return len(b), true
}

// ---- HTTP/2.

// frameReader finds frame headers in a stream of bytes.
type frameReader struct {
	hdr    [9]byte
	n      int // bytes of hdr read
	left   int // payload bytes still to come
	frames int // frame headers read
}

// boundary reports whether the stream is between two frames.
func (f *frameReader) boundary() bool { return f.n == 0 && f.left == 0 }

// next advances over b up to the end of the next frame header (returned
// with ok) or the end of b. It returns the bytes consumed.
func (f *frameReader) next(b []byte) (n int, typ, flags byte, id uint32, length int, ok bool) {
	for n < len(b) {
		if f.left > 0 {
			m := min(f.left, len(b)-n)
			f.left -= m
			n += m
			continue
		}
		m := copy(f.hdr[f.n:], b[n:])
		f.n += m
		n += m
		if f.n < len(f.hdr) {
			return n, 0, 0, 0, 0, false
		}
		f.n = 0
		f.frames++
		length = int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
		f.left = length
		return n, f.hdr[3], f.hdr[4], binary.BigEndian.Uint32(f.hdr[5:]) & 0x7fffffff, length, true
	}
	return n, 0, 0, 0, 0, false
}

// skip advances over b.
func (f *frameReader) skip(b []byte) {
	for len(b) > 0 {
		n, _, _, _, _, _ := f.next(b)
		b = b[n:]
	}
}

// finish advances over b to the end of the frame being read; it returns
// the bytes consumed and whether the frame ended there.
func (f *frameReader) finish(b []byte) (int, bool) {
	n := 0
	for !f.boundary() {
		if n == len(b) {
			return n, false
		}
		if f.left > 0 {
			m := min(f.left, len(b)-n)
			f.left -= m
			n += m
			continue
		}
		m := copy(f.hdr[f.n:], b[n:])
		f.n += m
		n += m
		if f.n == len(f.hdr) {
			f.n = 0
			f.frames++
			f.left = int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
		}
	}
	return n, true
}

// frames reads the client's frames in b, all of which go to net/http
// unless one is abuse: then the bytes up to the end of that frame's
// header do, and the reason comes back.
func (g *edgeConn) frames(b []byte, now time.Time) (int, string) {
	i := 0
	for i < len(b) {
		n, typ, flags, id, _, ok := g.rf.next(b[i:])
		i += n
		if !ok {
			continue
		}
		switch typ {
		case frameHeaders:
			g.conts = 0
			if id > g.lastID && id%2 == 1 {
				g.lastID = id
				g.streams++
				g.opened[id] = now
				if len(g.opened) > max(g.sweepAt, 1024) {
					for sid, at := range g.opened {
						if now.Sub(at) >= prematureResetWindow {
							delete(g.opened, sid)
						}
					}
					g.sweepAt = 2 * len(g.opened)
				}
			}
		case frameContinuation:
			if g.conts++; g.conts > maxContinuationFrames {
				return i, reasonContinuationFlood
			}
			if flags&flagEndHeaders != 0 {
				g.conts = 0
			}
		case frameRSTStream:
			at, ok := g.opened[id]
			if !ok {
				break
			}
			delete(g.opened, id)
			if now.Sub(at) >= prematureResetWindow {
				break
			}
			g.premature++
			if 2*g.premature >= prematureResetStreams || (g.streams >= prematureResetStreams && 2*g.premature >= g.streams) {
				return i, reasonRapidReset
			}
		}
	}
	return i, ""
}

// goAway cuts an abusive HTTP/2 connection: net/http reads nothing more;
// GOAWAY goes out between two of the server's frames (now, or when the
// frame being written ends), then the write side closes. Read then drains
// what the client still sends, so the GOAWAY is not lost to a reset, and
// ends the connection. After goAwayGrace the connection is closed
// whatever happened (a write stuck on a client that does not read).
func (g *edgeConn) goAway(reason string) {
	g.report(reason)
	g.rerr = errEdge
	last := g.lastID
	time.AfterFunc(2*goAwayGrace, func() { g.Conn.Close() })
	go func() {
		g.wmu.Lock()
		defer g.wmu.Unlock()
		g.goAwayID = last
		if !g.wdead.Load() && g.wf.boundary() && g.wf.frames > 0 {
			g.sendGoAway()
		}
		if g.wdead.Load() {
			g.endCut()
			return
		}
		g.goAwayDue = true // Write sends it at the end of its frame
	}()
}

// sendGoAway writes GOAWAY and half-closes (g.wmu held, at a boundary).
func (g *edgeConn) sendGoAway() {
	var f [17]byte
	f[2] = 8 // length
	f[3] = frameGoAway
	binary.BigEndian.PutUint32(f[9:], g.goAwayID)
	binary.BigEndian.PutUint32(f[13:], errEnhanceYourCalm)
	g.Conn.SetWriteDeadline(time.Now().Add(goAwayGrace))
	g.Conn.Write(f[:])
	closeWrite(g.Conn)
	g.wdead.Store(true)
}

func (g *edgeConn) endCut() { g.cutOnce.Do(func() { close(g.cut) }) }

// drain waits for the GOAWAY, then reads what the client still sends
// until it closes or goAwayGrace passes, and closes (rmu held).
func (g *edgeConn) drain() {
	t := time.NewTimer(goAwayGrace)
	select {
	case <-g.cut:
	case <-t.C:
	}
	t.Stop()
	g.Conn.SetReadDeadline(time.Now().Add(goAwayGrace))
	io.Copy(io.Discard, g.Conn)
	g.Conn.Close()
}

// Write passes the server's bytes on; in HTTP/2 it follows the frames,
// and sends a GOAWAY that is due once the frame being written ends.
func (g *edgeConn) Write(b []byte) (int, error) {
	if !g.h2.Load() {
		return g.Conn.Write(b)
	}
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if g.wdead.Load() {
		return 0, net.ErrClosed
	}
	if g.goAwayDue {
		// The server's SETTINGS is its first frame, whatever comes
		// after it.
		k := 0
		if g.wf.frames == 0 {
			n, _, _, _, _, _ := g.wf.next(b)
			k = n
		}
		n, done := g.wf.finish(b[k:])
		k += n
		if !done {
			// The frame goes on in the next write.
			return g.Conn.Write(b)
		}
		n, err := g.Conn.Write(b[:k])
		if err == nil {
			g.sendGoAway()
		}
		g.wdead.Store(true)
		g.endCut()
		return n, net.ErrClosed
	}
	n, err := g.Conn.Write(b)
	g.wf.skip(b[:n])
	return n, err
}

// CloseWrite half-closes, as net/http does after its last response on a
// connection (so a client still sending reads that response before the
// reset that closing with unread data causes).
func (g *edgeConn) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Close closes the connection; a cut waiting for a frame to end goes.
// After a refused request, net/http's 400 goes out first: the connection
// half-closes and what the client still sends is read and dropped until
// it closes too, for goAwayGrace at most (as net/http itself waits after
// its last response).
func (g *edgeConn) Close() error {
	g.wdead.Store(true)
	g.endCut()
	if g.linger.CompareAndSwap(true, false) {
		closeWrite(g.Conn)
		g.Conn.SetReadDeadline(time.Now().Add(goAwayGrace))
		io.Copy(io.Discard, g.Conn)
	}
	return g.Conn.Close()
}
