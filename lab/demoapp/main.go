package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

// apps are the apps this binary can be, with the paths each serves itself
// and the upstream each calls (flag name = the upstream's app name).
var apps = map[string]struct {
	paths []string
	calls map[string]string // /call/<name> -> the path it asks for
}{
	"monolith": {paths: []string{"/orders", "/users", "/inventory"}, calls: map[string]string{"orders": "/orders", "users": "/users"}},
	"orders":   {paths: []string{"/orders"}, calls: map[string]string{"monolith": "/inventory"}},
	"users":    {paths: []string{"/users"}, calls: map[string]string{"monolith": "/inventory"}},
}

// data is what each path answers with, so a caller can tell the apps
// apart by content too.
var data = map[string][]string{
	"/orders":    {"order-1001: 2 x widget", "order-1002: 1 x gadget"},
	"/users":     {"ada", "grace", "linus"},
	"/inventory": {"widget: 40", "gadget: 7"},
}

// answer is what every path but /call/* returns.
type answer struct {
	App  string   `json:"app"`
	Host string   `json:"host"`
	Path string   `json:"path"`
	Peer string   `json:"peer"`
	Data []string `json:"data"`
}

// callAnswer is what /call/<upstream> returns: the caller's side (the URL
// it asked for and the address its connection went to, the service's VIP
// when the mesh resolved the name) and the answering app's side, flat.
type callAnswer struct {
	App        string `json:"app"`
	Host       string `json:"host"`
	Path       string `json:"path"`
	Called     string `json:"called"`
	Via        string `json:"via"`
	Status     int    `json:"status"`
	AnswerApp  string `json:"answer_app"`
	AnswerHost string `json:"answer_host"`
	AnswerPeer string `json:"answer_peer"`
	Error      string `json:"error"`
}

type server struct {
	app, host string
	upstreams map[string]string // app name -> base URL
	client    *http.Client
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("demoapp: ")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], nil); err != nil {
		log.Fatal(err)
	}
}

// newServer reads the flags into a server; a bad flag is an error that
// names it.
func newServer(args []string) (s *server, listen string, err error) {
	fs := flag.NewFlagSet("demoapp", flag.ContinueOnError)
	app := fs.String("app", "", "which app to be: monolith, orders or users")
	fs.StringVar(&listen, "listen", "", "`address` to serve on, e.g. 127.0.0.1:9081")
	host, _ := os.Hostname()
	fs.StringVar(&host, "host", host, "the `name` of this host in answers")
	upstreams := map[string]*string{}
	for _, name := range []string{"monolith", "orders", "users"} {
		upstreams[name] = fs.String(name, "", "base `URL` of the "+name+" app through the mesh, e.g. http://"+name+".mesh:9080")
	}
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	if fs.NArg() > 0 {
		return nil, "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	spec, ok := apps[*app]
	if !ok {
		return nil, "", fmt.Errorf("-app: %q is not one of monolith, orders, users", *app)
	}
	if listen == "" {
		return nil, "", errors.New("-listen: an address is required")
	}
	// A new connection per call: the mesh decides each call afresh (an
	// intention written a moment ago applies), as the lab's traffic check
	// expects, instead of riding a connection it allowed earlier. No
	// HTTP_PROXY either: the mesh is the way out.
	s = &server{app: *app, host: host, upstreams: map[string]string{},
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	for name := range spec.calls {
		u := strings.TrimSuffix(*upstreams[name], "/")
		if u == "" {
			return nil, "", fmt.Errorf("-%s: the %s app calls %s; give its base URL", name, *app, name)
		}
		s.upstreams[name] = u
	}
	return s, listen, nil
}

// run serves until ctx ends; started, if set, learns the address.
func run(ctx context.Context, args []string, started func(net.Addr)) error {
	s, listen, err := newServer(args)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	log.Printf("%s@%s listening on %s", s.app, s.host, ln.Addr())
	if started != nil {
		started(ln.Addr())
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	<-done
	return nil
}

func (s *server) handler() http.Handler {
	spec := apps[s.app]
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	for _, p := range spec.paths {
		mux.HandleFunc("GET "+p, s.serveData)
	}
	for name, path := range spec.calls {
		mux.HandleFunc("GET /call/"+name, func(w http.ResponseWriter, r *http.Request) { s.serveCall(w, r, name, path) })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("%s@%s serves %s", s.app, s.host, strings.Join(s.paths(), " ")), http.StatusNotFound)
	})
	return mux
}

// paths lists what this app serves, for the 404 answer.
func (s *server) paths() []string {
	out := append([]string{"/health"}, apps[s.app].paths...)
	for name := range apps[s.app].calls {
		out = append(out, "/call/"+name)
	}
	sort.Strings(out[1:])
	return out
}

func (s *server) serveData(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, answer{App: s.app, Host: s.host, Path: r.URL.Path, Peer: r.RemoteAddr, Data: data[r.URL.Path]})
}

// serveCall asks upstream name for path and reports who answered. It
// answers 200 only when the upstream answered 200 with one of our answers;
// otherwise 502 with the reason.
func (s *server) serveCall(w http.ResponseWriter, r *http.Request, name, path string) {
	out := callAnswer{App: s.app, Host: s.host, Path: r.URL.Path, Called: s.upstreams[name] + path}
	a, via, status, err := s.get(r.Context(), out.Called)
	out.Via, out.Status = via, status
	if err == nil && a.App != name {
		err = fmt.Errorf("%s answered, not %s", a.App, name)
	}
	if err != nil {
		out.Error = err.Error()
		writeJSON(w, http.StatusBadGateway, out)
		return
	}
	out.AnswerApp, out.AnswerHost, out.AnswerPeer = a.App, a.Host, a.Peer
	writeJSON(w, http.StatusOK, out)
}

// get fetches url and decodes our answer; via is the remote address of the
// connection the request went out on.
func (s *server) get(ctx context.Context, url string) (a answer, via string, status int, err error) {
	trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { via = ci.Conn.RemoteAddr().String() }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, url, nil)
	if err != nil {
		return a, via, 0, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return a, via, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return a, via, resp.StatusCode, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return a, via, resp.StatusCode, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return a, via, resp.StatusCode, fmt.Errorf("not a demoapp answer: %w", err)
	}
	return a, via, resp.StatusCode, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
