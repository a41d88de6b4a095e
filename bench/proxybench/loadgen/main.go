// Command loadgen is the traffic side of bench/proxy.sh: the backend every
// path of the proxy benchmark ends at, and the clients that load it. The
// HTTP and gRPC load and the backend are fortio's (fortio.org/fortio,
// library packages: its CLI cannot be built here, see doc.go); what this
// file adds is an exact record of every request's latency, so that the
// percentiles are not read from fortio's bucketed histogram, and a
// single-stream TCP throughput sender and sink.
//
// It is its own module so that fortio stays out of vmesh's go.mod.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"fortio.org/fortio/fgrpc"
	"fortio.org/fortio/fhttp"
	"fortio.org/fortio/periodic"
	"fortio.org/log"
)

const usage = `usage: loadgen COMMAND [flags]

  server -http ADDR -grpc ADDR -tcp ADDR
        fortio's HTTP echo server (GET /echo?size=N answers N bytes), its
        gRPC ping server, and a TCP sink for 'tput'; until SIGINT/SIGTERM
  http  -url URL [-qps N] [-c N] [-t DUR]
        HTTP/1.1 load with fortio's client, one keep-alive connection per
        -c; -qps 0 runs closed loop (as fast as it goes)
  grpc  -addr HOST:PORT [-payload N] [-qps N] [-c N] [-t DUR]
        gRPC unary load (fortio's Ping), one connection per -c
  tput  -addr HOST:PORT [-bytes N]
        sends N bytes on one TCP connection to a 'server -tcp' sink and
        waits for its acknowledgement

http, grpc and tput print one JSON object on stdout.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	log.SetLogLevelQuiet(log.Error)
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "server":
		err = runServer(args)
	case "http", "grpc":
		err = runLoad(cmd, args)
	case "tput":
		err = runTput(args)
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown command %q\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func runServer(args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	httpAddr := fs.String("http", "", "HTTP echo server `address`")
	grpcAddr := fs.String("grpc", "", "gRPC ping server `address`")
	tcpAddr := fs.String("tcp", "", "TCP sink `address` for tput")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *httpAddr == "" || *grpcAddr == "" || *tcpAddr == "" {
		return errors.New("-http, -grpc and -tcp are all required")
	}
	if _, a := fhttp.Serve(*httpAddr, "/debug"); a == nil {
		return fmt.Errorf("-http %s: cannot listen", *httpAddr)
	}
	if a := fgrpc.PingServer(*grpcAddr, "", 0, &fhttp.TLSOptions{}); a == nil {
		return fmt.Errorf("-grpc %s: cannot listen", *grpcAddr)
	}
	ln, err := net.Listen("tcp", *tcpAddr)
	if err != nil {
		return fmt.Errorf("-tcp: %w", err)
	}
	go sink(ln)
	fmt.Fprintf(os.Stderr, "loadgen server: http %s, grpc %s, tcp %s\n", *httpAddr, *grpcAddr, *tcpAddr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}

// sink serves tput: an 8-byte big-endian length, that many bytes, then
// one byte back once all of them have arrived.
func sink(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var hdr [8]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			n := int64(binary.BigEndian.Uint64(hdr[:]))
			if _, err := io.CopyN(io.Discard, c, n); err != nil {
				return
			}
			c.Write([]byte{1})
		}()
	}
}

// result is what http, grpc and tput print.
type result struct {
	Kind         string  `json:"kind"`
	Target       string  `json:"target"`
	RequestedQPS float64 `json:"requested_qps,omitempty"`
	Conns        int     `json:"conns,omitempty"`
	ActualQPS    float64 `json:"actual_qps,omitempty"`
	Count        int     `json:"count,omitempty"`
	Errors       int64   `json:"errors"`
	P50us        float64 `json:"p50_us,omitempty"`
	P90us        float64 `json:"p90_us,omitempty"`
	P99us        float64 `json:"p99_us,omitempty"`
	MaxUs        float64 `json:"max_us,omitempty"`
	Seconds      float64 `json:"seconds"`
	Bytes        int64   `json:"bytes,omitempty"`
	MBps         float64 `json:"mb_per_s,omitempty"`
}

// latencies is a periodic.AccessLogger that keeps every request's
// latency: each runner goroutine appends only to its own slice.
type latencies struct {
	per    [][]float64
	errors []int64
}

func newLatencies(threads int, expect int) *latencies {
	l := &latencies{per: make([][]float64, threads), errors: make([]int64, threads)}
	for i := range l.per {
		l.per[i] = make([]float64, 0, expect/threads+1024)
	}
	return l
}

func (l *latencies) Start(ctx context.Context, _ periodic.ThreadID, _ int64, _ time.Time) context.Context {
	return ctx
}

func (l *latencies) Report(_ context.Context, t periodic.ThreadID, _ int64, _ time.Time, latency float64, ok bool, _ string) {
	l.per[t] = append(l.per[t], latency)
	if !ok {
		l.errors[t]++
	}
}

func (l *latencies) Info() string { return "exact latencies" }

// fill sorts the latencies and sets the percentiles (nearest rank).
func (l *latencies) fill(r *result) {
	var all []float64
	for i, p := range l.per {
		all = append(all, p...)
		r.Errors += l.errors[i]
	}
	slices.Sort(all)
	r.Count = len(all)
	if len(all) == 0 {
		return
	}
	rank := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(all)))) - 1
		return all[max(i, 0)] * 1e6
	}
	r.P50us, r.P90us, r.P99us, r.MaxUs = rank(50), rank(90), rank(99), all[len(all)-1]*1e6
}

func runLoad(kind string, args []string) error {
	fs := flag.NewFlagSet(kind, flag.ContinueOnError)
	url := fs.String("url", "", "URL to GET (http)")
	addr := fs.String("addr", "", "gRPC server `host:port` (grpc)")
	payload := fs.Int("payload", 1024, "gRPC ping payload `bytes`, echoed back (grpc)")
	qps := fs.Float64("qps", 1000, "requests per second over all connections; 0: as fast as possible")
	conns := fs.Int("c", 16, "connections")
	dur := fs.Duration("t", 15*time.Second, "duration")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *conns < 1 || *dur <= 0 || *qps < 0 {
		return fmt.Errorf("-c %d, -t %s, -qps %g: want c >= 1, t > 0, qps >= 0", *conns, *dur, *qps)
	}
	ro := periodic.RunnerOptions{
		QPS: *qps, NumThreads: *conns, Duration: *dur, Resolution: 1e-6, Out: io.Discard,
		// Uniform staggers the connections' send times, so that 16
		// connections at 1000/s send every 1 ms rather than 16 at once
		// every 16 ms.
		Uniform: true,
	}
	if *qps == 0 {
		ro.QPS = -1 // fortio: negative is "no wait between calls"
	}
	expect := int(math.Max(*qps, 20000) * dur.Seconds())
	lat := newLatencies(*conns, expect)
	ro.AccessLogger = lat
	r := result{Kind: kind, RequestedQPS: *qps, Conns: *conns}
	var rr *periodic.RunnerResults
	switch kind {
	case "http":
		if !strings.HasPrefix(*url, "http://") {
			return fmt.Errorf("-url %q: want http://HOST:PORT/PATH", *url)
		}
		o := fhttp.HTTPRunnerOptions{RunnerOptions: ro}
		o.URL = *url
		o.HTTPReqTimeOut = 5 * time.Second
		res, err := fhttp.RunHTTPTest(&o)
		if err != nil {
			return err
		}
		r.Target = *url
		rr = &res.RunnerResults
	case "grpc":
		if *addr == "" {
			return errors.New("-addr is required")
		}
		o := fgrpc.GRPCRunnerOptions{RunnerOptions: ro, Destination: *addr, UsePing: true, Payload: strings.Repeat("x", *payload)}
		res, err := fgrpc.RunGRPCTest(&o)
		if err != nil {
			return err
		}
		r.Target = *addr
		rr = &res.RunnerResults
	}
	lat.fill(&r)
	r.ActualQPS = rr.ActualQPS
	r.Seconds = rr.ActualDuration.Seconds()
	return json.NewEncoder(os.Stdout).Encode(r)
}

func runTput(args []string) error {
	fs := flag.NewFlagSet("tput", flag.ContinueOnError)
	addr := fs.String("addr", "", "TCP sink `host:port` (loadgen server -tcp, directly or through a proxy)")
	n := fs.Int64("bytes", 1<<30, "bytes to send")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *n <= 0 {
		return errors.New("-addr and a positive -bytes are required")
	}
	c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(*timeout))
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := time.Now()
	binary.BigEndian.PutUint64(buf[:8], uint64(*n))
	if _, err := c.Write(buf[:8]); err != nil {
		return err
	}
	for left := *n; left > 0; {
		k := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:k]); err != nil {
			return fmt.Errorf("after %d bytes: %w", *n-left, err)
		}
		left -= k
	}
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return fmt.Errorf("waiting for the sink's acknowledgement: %w", err)
	}
	sec := time.Since(start).Seconds()
	return json.NewEncoder(os.Stdout).Encode(result{Kind: "tput", Target: *addr, Seconds: sec, Bytes: *n, MBps: float64(*n) / 1e6 / sec})
}
