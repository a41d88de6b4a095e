package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Request body limits. A body is read whole (or decoded) before anything
// is written through raft, so without a bound one client could make the
// agent hold any amount of memory.
const (
	// maxBody bounds an ordinary body (a registration, a config entry, an
	// intention): 4 MiB is far above the largest legitimate one (a router
	// with hundreds of routes is a few hundred KiB) and small enough that
	// a handful of concurrent requests cannot exhaust the agent.
	maxBody = 4 << 20
	// maxKVSize is Consul's default limit on a KV value (kv_max_value_size),
	// kept so that what Consul accepts and refuses we accept and refuse,
	// with Consul's messages (api_kv.go).
	maxKVSize = 512 * 1024
)

// errTooLarge answers a body over limit: 413, naming the limit so that
// the client knows what to cut.
func errTooLarge(limit int64) error {
	return &HTTPError{Code: http.StatusRequestEntityTooLarge,
		Msg: fmt.Sprintf("Request body too large: the limit is %d bytes", limit)}
}

// limitBody bounds r's body to limit; reading past it fails with an error
// that bodyError turns into a 413.
func limitBody(w http.ResponseWriter, r *http.Request, limit int64) io.Reader {
	return http.MaxBytesReader(w, r.Body, limit)
}

// readBody reads a whole body of at most maxBody bytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(limitBody(w, r, maxBody))
	if err != nil {
		return nil, bodyError(err)
	}
	return body, nil
}

// bodyError turns a failed read of a limited body into the answer: a 413
// when the limit was hit, otherwise a 400.
func bodyError(err error) error {
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return errTooLarge(mbe.Limit)
	}
	return badRequest("Request decode failed: %v", err)
}
