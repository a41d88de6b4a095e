package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// start runs the app as main does, on a free loopback port, until the
// test ends; it returns the app's base URL.
func start(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, append(args, "-listen", "127.0.0.1:0"), func(a net.Addr) { addr <- a }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case a := <-addr:
		return "http://" + a.String()
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the app did not start")
	}
	return ""
}

func get(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if resp.Header.Get("Content-Type") == "application/json" {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v: %s", url, err, b)
		}
		// traffic.sh reads the answers with sed: one line, flat.
		if strings.Count(strings.TrimSpace(string(b)), "\n") > 0 {
			t.Errorf("%s: the answer is more than one line: %s", url, b)
		}
	}
	return resp.StatusCode, m
}

// The monolith calls orders, orders calls the monolith, each by the URL
// its flags give; every answer says who answered and whom it saw.
func TestCallsBetweenApps(t *testing.T) {
	// orders needs the monolith's URL before the monolith exists: point it
	// at a stand-in that forwards to the real one.
	var monolith string
	fwd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := http.Get(monolith + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer fwd.Close()
	orders := start(t, "-app", "orders", "-host", "vm2", "-monolith", fwd.URL+"/")
	users := start(t, "-app", "users", "-host", "vm3", "-monolith", fwd.URL)
	monolith = start(t, "-app", "monolith", "-host", "vm1", "-orders", orders, "-users", users)

	for _, path := range []string{"/orders", "/users", "/inventory"} {
		code, m := get(t, monolith+path)
		if code != 200 || m["app"] != "monolith" || m["host"] != "vm1" || m["path"] != path || m["data"] == nil {
			t.Errorf("monolith %s: %d %v", path, code, m)
		}
		if peer, _ := m["peer"].(string); !strings.HasPrefix(peer, "127.0.0.1:") {
			t.Errorf("monolith %s: peer %q, want the test's loopback address", path, peer)
		}
	}
	for _, c := range []struct{ base, path, app, host, called string }{
		{monolith, "/call/orders", "orders", "vm2", orders + "/orders"},
		{monolith, "/call/users", "users", "vm3", users + "/users"},
		{orders, "/call/monolith", "monolith", "vm1", fwd.URL + "/inventory"},
		{users, "/call/monolith", "monolith", "vm1", fwd.URL + "/inventory"},
	} {
		code, m := get(t, c.base+c.path)
		if code != 200 || m["answer_app"] != c.app || m["answer_host"] != c.host || m["called"] != c.called || m["error"] != "" {
			t.Errorf("%s%s: %d %v", c.base, c.path, code, m)
		}
		if via, _ := m["via"].(string); via != strings.TrimPrefix(c.called[:strings.LastIndex(c.called, "/")], "http://") {
			t.Errorf("%s%s: via %q, want the address it connected to", c.base, c.path, via)
		}
		if peer, _ := m["answer_peer"].(string); !strings.HasPrefix(peer, "127.0.0.1:") {
			t.Errorf("%s%s: answer_peer %q", c.base, c.path, peer)
		}
	}
	// Each app serves only its own paths.
	if code, _ := get(t, orders+"/inventory"); code != http.StatusNotFound {
		t.Errorf("orders /inventory: %d, want 404", code)
	}
}

// A call whose upstream fails, or is not the app it should be, is a 502
// that says why: traffic.sh prints it.
func TestCallFailures(t *testing.T) {
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer broken.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	users := start(t, "-app", "users", "-host", "vm3", "-monolith", "http://127.0.0.1:1")
	// Another monolith serves /orders too: the right path, the wrong app.
	impostor := start(t, "-app", "monolith", "-host", "vm9", "-orders", "http://127.0.0.1:1", "-users", users)

	for _, c := range []struct {
		name, orders, want string
	}{
		{"upstream 500", broken.URL, "HTTP 500: boom"},
		{"nobody listening", dead.URL, "connection refused"},
		{"the wrong app answers", impostor, "monolith answered, not orders"},
	} {
		monolith := start(t, "-app", "monolith", "-host", "vm1", "-orders", c.orders, "-users", users)
		code, m := get(t, monolith+"/call/orders")
		if errMsg, _ := m["error"].(string); code != http.StatusBadGateway || !strings.Contains(errMsg, c.want) {
			t.Errorf("%s: %d %v, want 502 with %q", c.name, code, m, c.want)
		}
	}
}

func TestFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-listen", ":0"}, "-app"},
		{[]string{"-app", "billing", "-listen", ":0"}, `-app: "billing"`},
		{[]string{"-app", "orders", "-monolith", "http://m"}, "-listen"},
		{[]string{"-app", "monolith", "-listen", ":0", "-orders", "http://o"}, "-users"},
		{[]string{"-app", "users", "-listen", ":0"}, "-monolith"},
		{[]string{"-app", "users", "-listen", ":0", "-monolith", "http://m", "extra"}, `"extra"`},
	} {
		_, _, err := newServer(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %s", c.args, err, c.want)
		}
	}
	if err := run(context.Background(), []string{"-app", "orders", "-monolith", "http://m", "-listen", "256.0.0.1:1"}, nil); err == nil || !strings.Contains(err.Error(), "-listen") {
		t.Errorf("bad listen address: %v", err)
	}
}
