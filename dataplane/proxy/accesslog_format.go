package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/vmesh/vmesh/envoyfmt"

	"google.golang.org/protobuf/types/known/structpb"
)

// Envoy's access log formats, compiled once per configuration: a text
// format is a list of literals and command operators; a JSON format is an
// object whose string values are text formats (a value that is a single
// numeric operator, such as "%RESPONSE_CODE%", is written as a number,
// and an operator with no value as null, as Envoy does). Rendering appends
// to a byte slice and allocates nothing of its own.

// logOp is one command operator.
type logOp int

const (
	opStartTime logOp = iota + 1
	opProtocol
	opResponseCode
	opResponseCodeDetails
	opResponseFlags
	opResponseFlagsLong
	opTerminationDetails
	opBytesReceived
	opBytesSent
	opDuration
	opRequestDuration
	opResponseDuration
	opUpstreamHost
	opUpstreamCluster
	opUpstreamLocalAddress
	opUpstreamFailureReason
	opDownstreamLocal
	opDownstreamRemote
	opDownstreamRemoteNoPort
	opPeerURISAN
	opLocalURISAN
	opRequestedServerName
	opRouteName
	opTraceID
	opHostname
	opReq
	opResp
	opTrailer
)

// logOps are the operators by name; those that take an argument end
// with "(" (envoyfmt.Operators is the same list, checked by a test).
var logOps = map[string]logOp{
	"START_TIME": opStartTime, "START_TIME(": opStartTime, "PROTOCOL": opProtocol,
	"RESPONSE_CODE": opResponseCode, "RESPONSE_CODE_DETAILS": opResponseCodeDetails,
	"RESPONSE_FLAGS": opResponseFlags, "RESPONSE_FLAGS_LONG": opResponseFlagsLong,
	"CONNECTION_TERMINATION_DETAILS": opTerminationDetails,
	"BYTES_RECEIVED":                 opBytesReceived, "BYTES_SENT": opBytesSent, "DURATION": opDuration,
	"REQUEST_DURATION": opRequestDuration, "RESPONSE_DURATION": opResponseDuration,
	"UPSTREAM_HOST": opUpstreamHost, "UPSTREAM_CLUSTER": opUpstreamCluster,
	"UPSTREAM_LOCAL_ADDRESS": opUpstreamLocalAddress, "UPSTREAM_TRANSPORT_FAILURE_REASON": opUpstreamFailureReason,
	"DOWNSTREAM_LOCAL_ADDRESS": opDownstreamLocal, "DOWNSTREAM_REMOTE_ADDRESS": opDownstreamRemote,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": opDownstreamRemoteNoPort,
	"DOWNSTREAM_PEER_URI_SAN":                opPeerURISAN, "DOWNSTREAM_LOCAL_URI_SAN": opLocalURISAN,
	"REQUESTED_SERVER_NAME": opRequestedServerName, "ROUTE_NAME": opRouteName, "TRACE_ID": opTraceID,
	"HOSTNAME": opHostname, "REQ(": opReq, "RESP(": opResp, "TRAILER(": opTrailer,
}

// numericOps are written as JSON numbers when they are a value's only
// content.
var numericOps = map[logOp]bool{
	opResponseCode: true, opBytesReceived: true, opBytesSent: true, opDuration: true,
	opRequestDuration: true, opResponseDuration: true,
}

// logPart is a literal (op 0) or an operator.
type logPart struct {
	op  logOp
	lit string
	// hdr and alt are REQ/RESP/TRAILER's header and alternative (the
	// one after "?"), canonical or pseudo (":path").
	hdr, alt string
	// max truncates the value (0: no limit).
	max int
	// layout is START_TIME's, as a Go layout with a fraction; unix is
	// %s (seconds since the epoch).
	layout string
	unix   bool
}

// textFormat is a compiled text format.
type textFormat []logPart

// jsonField is one key of a JSON format, with its value: a text format,
// a constant (raw JSON), or a nested object.
type jsonField struct {
	key     []byte // the key, JSON-quoted, with its colon
	text    textFormat
	numeric bool // a single numeric operator: written as a number
	raw     []byte
	obj     []jsonField
}

// logFormat is a compiled format: text or JSON.
type logFormat struct {
	text textFormat
	json []jsonField // nil: text
}

// compileText compiles an Envoy text format string.
func compileText(s string) (textFormat, error) {
	var out textFormat
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			out = append(out, logPart{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			lit.WriteByte(s[i])
			continue
		}
		j := envoyfmt.OperatorEnd(s[i+1:])
		if j < 0 {
			return nil, fmt.Errorf("unclosed command operator at byte %d: %q", i, s[i:])
		}
		body := s[i+1 : i+1+j]
		i += j + 1
		if body == "" {
			lit.WriteByte('%')
			continue
		}
		p, err := compileOp(body)
		if err != nil {
			return nil, err
		}
		flush()
		out = append(out, p)
	}
	flush()
	return out, nil
}

func compileOp(body string) (logPart, error) {
	name, arg, hasArg := strings.Cut(body, "(")
	if !hasArg {
		op, ok := logOps[name]
		if !ok {
			return logPart{}, fmt.Errorf("unknown command operator %%%s%%", body)
		}
		p := logPart{op: op}
		if op == opStartTime {
			p.layout = "2006-01-02T15:04:05.000Z07:00"
		}
		return p, nil
	}
	op, ok := logOps[name+"("]
	if !ok {
		return logPart{}, fmt.Errorf("command operator %%%s%% takes no argument or is unknown", body)
	}
	end := strings.LastIndexByte(arg, ')')
	if end < 0 {
		return logPart{}, fmt.Errorf("command operator %%%s%%: missing )", body)
	}
	p := logPart{op: op}
	if rest := arg[end+1:]; rest != "" {
		n, ok := strings.CutPrefix(rest, ":")
		v, err := strconv.Atoi(n)
		if !ok || err != nil || v <= 0 {
			return logPart{}, fmt.Errorf("command operator %%%s%%: after ) only :N (a maximum length) may follow", body)
		}
		p.max = v
	}
	arg = arg[:end]
	if op == opStartTime {
		layout, unix, err := strftimeLayout(arg)
		if err != nil {
			return logPart{}, fmt.Errorf("command operator %%%s%%: %w", body, err)
		}
		p.layout, p.unix = layout, unix
		return p, nil
	}
	h, alt, _ := strings.Cut(arg, "?")
	if strings.TrimSpace(h) == "" {
		return logPart{}, fmt.Errorf("command operator %%%s%%: missing the header name", body)
	}
	p.hdr, p.alt = headerKey(h), headerKey(alt)
	return p, nil
}

// headerKey is the form a header is looked up with: pseudo-headers in
// lower case, others canonical.
func headerKey(h string) string {
	h = strings.TrimSpace(h)
	if strings.HasPrefix(h, ":") {
		return strings.ToLower(h)
	}
	return http.CanonicalHeaderKey(h)
}

// strftimeLayout turns START_TIME's strftime format into a Go layout,
// for the common subset (%Y %m %d %H %M %S %z %Z %b %a, %E<n>S or %f for
// fractions of a second, %s alone for Unix seconds). Literal letters and
// digits are refused: Go's layout would read them as fields.
func strftimeLayout(f string) (string, bool, error) {
	if f == "" {
		return "2006-01-02T15:04:05.000Z07:00", false, nil
	}
	if f == "%s" {
		return "", true, nil
	}
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c != '%' {
			if (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') {
				return "", false, fmt.Errorf("START_TIME: literal %q is not supported in a time format", c)
			}
			b.WriteByte(c)
			continue
		}
		if i+1 >= len(f) {
			return "", false, fmt.Errorf("START_TIME: trailing %%")
		}
		i++
		switch f[i] {
		case 'Y':
			b.WriteString("2006")
		case 'm':
			b.WriteString("01")
		case 'd':
			b.WriteString("02")
		case 'H':
			b.WriteString("15")
		case 'M':
			b.WriteString("04")
		case 'S':
			b.WriteString("05")
		case 'z':
			b.WriteString("-0700")
		case 'Z':
			b.WriteString("MST")
		case 'b':
			b.WriteString("Jan")
		case 'a':
			b.WriteString("Mon")
		case 'f':
			b.WriteString(".000000")
		case 'E':
			// %E<n>S: seconds with n fractional digits.
			if i+2 < len(f) && f[i+1] >= '1' && f[i+1] <= '9' && f[i+2] == 'S' {
				b.WriteString("05." + strings.Repeat("0", int(f[i+1]-'0')))
				i += 2
				continue
			}
			return "", false, fmt.Errorf("START_TIME: only %%E<1-9>S is supported of %%E")
		case '%':
			b.WriteByte('%')
		default:
			return "", false, fmt.Errorf("START_TIME: %%%c is not supported", f[i])
		}
	}
	return b.String(), false, nil
}

// compileJSON compiles a json_format.
func compileJSON(st *structpb.Struct) ([]jsonField, error) {
	keys := make([]string, 0, len(st.GetFields()))
	for k := range st.GetFields() {
		keys = append(keys, k)
	}
	// A Struct has no order; sorted keys make lines comparable.
	sort.Strings(keys)
	out := make([]jsonField, 0, len(keys))
	for _, k := range keys {
		kq, _ := json.Marshal(k)
		f := jsonField{key: append(kq, ':')}
		switch v := st.GetFields()[k].GetKind().(type) {
		case *structpb.Value_StringValue:
			t, err := compileText(v.StringValue)
			if err != nil {
				return nil, fmt.Errorf("json_format[%q]: %w", k, err)
			}
			f.text = t
			f.numeric = len(t) == 1 && numericOps[t[0].op] && t[0].max == 0
		case *structpb.Value_StructValue:
			obj, err := compileJSON(v.StructValue)
			if err != nil {
				return nil, fmt.Errorf("json_format[%q].%w", k, err)
			}
			f.obj = obj
		case *structpb.Value_NumberValue, *structpb.Value_BoolValue, *structpb.Value_NullValue:
			f.raw, _ = st.GetFields()[k].MarshalJSON()
		default:
			return nil, fmt.Errorf("json_format[%q]: lists are not supported", k)
		}
		out = append(out, f)
	}
	return out, nil
}

// render appends one line for e, newline included for JSON (a text
// format carries its own).
func (f *logFormat) render(b []byte, e *logEntry) []byte {
	if f.json == nil {
		for i := range f.text {
			b = f.text[i].appendText(b, e)
		}
		return b
	}
	b = appendJSONObject(b, f.json, e)
	return append(b, '\n')
}

func appendJSONObject(b []byte, fields []jsonField, e *logEntry) []byte {
	b = append(b, '{')
	for i := range fields {
		f := &fields[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f.key...)
		switch {
		case f.obj != nil:
			b = appendJSONObject(b, f.obj, e)
		case f.raw != nil:
			b = append(b, f.raw...)
		case f.numeric:
			if v, ok := f.text[0].number(e); ok {
				b = strconv.AppendInt(b, v, 10)
			} else {
				b = append(b, "null"...)
			}
		case len(f.text) == 1 && f.text[0].op != 0:
			// One operator: its value, or null when it has none.
			var tmp [256]byte
			v := f.text[0].appendValue(tmp[:0], e)
			if len(v) == 0 {
				b = append(b, "null"...)
				continue
			}
			b = appendJSONString(b, v)
		default:
			var tmp [256]byte
			v := tmp[:0]
			for j := range f.text {
				v = f.text[j].appendText(v, e)
			}
			b = appendJSONString(b, v)
		}
	}
	return append(b, '}')
}

// appendText appends a part as a text format writes it: "-" for an
// operator without a value.
func (p *logPart) appendText(b []byte, e *logEntry) []byte {
	if p.op == 0 {
		return append(b, p.lit...)
	}
	start := len(b)
	b = p.appendValue(b, e)
	if len(b) == start {
		b = append(b, '-')
	}
	return b
}

// number is a numeric operator's value.
func (p *logPart) number(e *logEntry) (int64, bool) {
	switch p.op {
	case opResponseCode:
		return int64(e.code), true
	case opBytesReceived:
		return e.bytesIn, true
	case opBytesSent:
		return e.bytesOut, true
	case opDuration:
		return e.duration.Milliseconds(), true
	case opRequestDuration:
		if e.reqDuration < 0 {
			return 0, false
		}
		return e.reqDuration.Milliseconds(), true
	case opResponseDuration:
		if e.respDuration < 0 {
			return 0, false
		}
		return e.respDuration.Milliseconds(), true
	}
	return 0, false
}

// appendValue appends an operator's value (nothing: no value).
func (p *logPart) appendValue(b []byte, e *logEntry) []byte {
	start := len(b)
	switch p.op {
	case opStartTime:
		t := e.start.UTC()
		if p.unix {
			b = strconv.AppendInt(b, t.Unix(), 10)
		} else {
			b = t.AppendFormat(b, p.layout)
		}
	case opResponseCode, opBytesReceived, opBytesSent, opDuration, opRequestDuration, opResponseDuration:
		if v, ok := p.number(e); ok {
			b = strconv.AppendInt(b, v, 10)
		}
	case opProtocol:
		b = append(b, e.protocol...)
	case opResponseCodeDetails:
		b = append(b, e.details...)
	case opResponseFlags:
		// "-" without a flag, in JSON too, as Envoy writes it.
		b = append(b, e.flags.String()...)
	case opResponseFlagsLong:
		if e.flags == 0 {
			b = append(b, '-')
		}
		b = e.flags.appendLong(b)
	case opTerminationDetails:
		b = append(b, e.termination...)
	case opUpstreamHost:
		b = append(b, e.upstreamHost...)
		if e.upstreamHost == "" && e.upstreamAddr.IsValid() {
			b = e.upstreamAddr.AppendTo(b)
		}
	case opUpstreamCluster:
		b = append(b, e.upstreamCluster...)
	case opUpstreamLocalAddress:
		b = append(b, e.upstreamLocal...)
	case opUpstreamFailureReason:
		b = append(b, e.upstreamFailure...)
	case opDownstreamLocal:
		b = append(b, e.downstreamLocal...)
		if e.downstreamLocal == "" && e.downstreamAddr.IsValid() {
			b = e.downstreamAddr.AppendTo(b)
		}
	case opDownstreamRemote:
		b = append(b, e.downstreamRemote...)
	case opDownstreamRemoteNoPort:
		host := e.downstreamRemote
		if i := strings.LastIndexByte(host, ':'); i >= 0 {
			host = strings.Trim(host[:i], "[]")
		}
		b = append(b, host...)
	case opPeerURISAN:
		for i, id := range e.peerIDs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, id...)
		}
	case opLocalURISAN:
		b = append(b, e.localURI...)
	case opRequestedServerName:
		b = append(b, e.sni...)
	case opRouteName:
		b = append(b, e.routeName...)
	case opTraceID:
		b = append(b, traceID(e.reqHeader("Traceparent"))...)
	case opHostname:
		b = append(b, hostname...)
	case opReq:
		v := e.reqHeader(p.hdr)
		if v == "" && p.alt != "" {
			v = e.reqHeader(p.alt)
		}
		b = append(b, v...)
	case opResp:
		v := headerOf(e.respHeaders, p.hdr)
		if v == "" && p.alt != "" {
			v = headerOf(e.respHeaders, p.alt)
		}
		b = append(b, v...)
	case opTrailer:
		v := headerOf(e.trailers, p.hdr)
		if v == "" && p.alt != "" {
			v = headerOf(e.trailers, p.alt)
		}
		b = append(b, v...)
	}
	if p.max > 0 && len(b)-start > p.max {
		b = b[:start+p.max]
	}
	return b
}

func headerOf(h http.Header, k string) string {
	if h == nil || strings.HasPrefix(k, ":") {
		return ""
	}
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// traceID is the trace ID of a W3C traceparent header
// ("00-<32 hex>-<16 hex>-<2 hex>"), "" when it is not one.
func traceID(tp string) string {
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' {
		return ""
	}
	id := tp[3:35]
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return ""
		}
	}
	if id == "00000000000000000000000000000000" {
		return ""
	}
	return id
}

// appendJSONString appends s as a JSON string: control characters,
// quotes and backslashes escaped, runs of plain bytes copied at once.
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	plain := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
			continue
		}
		b = append(b, s[plain:i]...)
		plain = i + 1
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
	}
	b = append(b, s[plain:]...)
	return append(b, '"')
}

var hostname, _ = os.Hostname()
