package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
)

// The script appends one JSON object per measurement to its results file;
// report turns them into the tables of docs/BENCHMARKS.md.

// record is one line of the results file.
type record struct {
	Path   string   `json:"path"`
	Test   string   `json:"test"` // http, maxqps, grpc, tput, rss, rss_idle, rss_rate, busy
	Run    int      `json:"run"`
	CPUs   float64  `json:"cpu_s"`
	RSSKB  float64  `json:"rss_kb"`
	HWMKB  float64  `json:"hwm_kb"`
	Busy   float64  `json:"busy_pct"`
	Result loadgen  `json:"result"`
	Meta   *runMeta `json:"meta"`
}

// loadgen is what loadgen prints.
type loadgen struct {
	RequestedQPS float64 `json:"requested_qps"`
	ActualQPS    float64 `json:"actual_qps"`
	Count        float64 `json:"count"`
	Errors       float64 `json:"errors"`
	P50us        float64 `json:"p50_us"`
	P90us        float64 `json:"p90_us"`
	P99us        float64 `json:"p99_us"`
	MBps         float64 `json:"mb_per_s"`
}

type runMeta struct {
	Mode       string `json:"mode"` // tcp or l7: the vmesh services' protocol
	Machine    string `json:"machine"`
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
	Runs       int    `json:"runs"`
}

// paths in the order they are printed; the label says what each is.
var paths = []struct{ key, label string }{
	{"direct", "direct (no proxy)"},
	{"vmesh-1hop", "vmesh, one hop (`vmesh proxy`, plaintext)"},
	{"vmesh-mesh", "vmesh mesh: agent → mTLS → agent"},
	{"nginx", "nginx → TLS → nginx (http / grpc_pass)"},
	{"haproxy", "HAProxy → TLS → HAProxy (mode http)"},
	{"nginx-l4", "nginx → TLS → nginx (stream)"},
	{"haproxy-l4", "HAProxy → TLS → HAProxy (mode tcp)"},
}

// results holds every run's value of one metric, per path.
type results map[string]map[string][]float64

func (r results) add(path, metric string, v float64) {
	if r[path] == nil {
		r[path] = map[string][]float64{}
	}
	r[path][metric] = append(r[path][metric], v)
}

// stat is the median of the runs with their range; ok is false when
// there was no run.
type stat struct {
	med, lo, hi float64
	n           int
}

func (r results) stat(path, metric string) (stat, bool) {
	vs := slices.Clone(r[path][metric])
	if len(vs) == 0 {
		return stat{}, false
	}
	slices.Sort(vs)
	m := vs[len(vs)/2]
	if len(vs)%2 == 0 {
		m = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
	}
	return stat{med: m, lo: vs[0], hi: vs[len(vs)-1], n: len(vs)}, true
}

// collect reads the results file: per run, latency added over the direct
// path of the same round, and the efficiency and size metrics.
func collect(in io.Reader) (results, *runMeta, []string, error) {
	type key struct {
		path, test string
		run        int
	}
	recs := map[key]record{}
	var meta *runMeta
	var warnings []string
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" {
			continue
		}
		var rec record
		if err := json.Unmarshal([]byte(t), &rec); err != nil {
			return nil, nil, nil, fmt.Errorf("line %d: %w", line, err)
		}
		if rec.Meta != nil {
			meta = rec.Meta
			continue
		}
		if rec.Path == "" || rec.Test == "" {
			return nil, nil, nil, fmt.Errorf("line %d: no path or test", line)
		}
		if rec.Result.Errors > 0 {
			warnings = append(warnings, fmt.Sprintf("%s %s run %d: %.0f errors of %.0f requests", rec.Path, rec.Test, rec.Run, rec.Result.Errors, rec.Result.Count))
		}
		if q := rec.Result.RequestedQPS; q > 0 && rec.Result.ActualQPS < 0.98*q {
			warnings = append(warnings, fmt.Sprintf("%s %s run %d: %.0f req/s of the %.0f asked for (the client fell behind)", rec.Path, rec.Test, rec.Run, rec.Result.ActualQPS, q))
		}
		recs[key{rec.Path, rec.Test, rec.Run}] = rec
	}
	if err := sc.Err(); err != nil {
		return nil, nil, nil, err
	}
	res := results{}
	for k, rec := range recs {
		lg := rec.Result
		switch k.test {
		case "http", "grpc":
			res.add(k.path, k.test+"-p50", lg.P50us)
			res.add(k.path, k.test+"-p90", lg.P90us)
			res.add(k.path, k.test+"-p99", lg.P99us)
			if d, ok := recs[key{"direct", k.test, k.run}]; ok {
				res.add(k.path, k.test+"-p50-added", lg.P50us-d.Result.P50us)
				res.add(k.path, k.test+"-p90-added", lg.P90us-d.Result.P90us)
				res.add(k.path, k.test+"-p99-added", lg.P99us-d.Result.P99us)
			}
		case "maxqps":
			res.add(k.path, "maxqps", lg.ActualQPS)
			if rec.CPUs > 0 {
				res.add(k.path, "req-per-cpu-s", lg.Count/rec.CPUs)
				res.add(k.path, "cpu-us-per-req", rec.CPUs/lg.Count*1e6)
			}
		case "tput":
			res.add(k.path, "tput", lg.MBps)
		case "busy":
			res.add("machine", "busy", rec.Busy)
		case "rss":
			res.add(k.path, "rss", rec.RSSKB/1024)
			res.add(k.path, "hwm", rec.HWMKB/1024)
		case "rss_idle", "rss_rate":
			res.add(k.path, strings.ReplaceAll(k.test, "_", "-"), rec.RSSKB/1024)
		default:
			return nil, nil, nil, fmt.Errorf("%s run %d: unknown test %q", k.path, k.run, k.test)
		}
	}
	return res, meta, warnings, nil
}

func runReport(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	in := fs.String("in", "", "the results `file` bench/proxy.sh wrote")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" {
		return errors.New("-in is required")
	}
	f, err := os.Open(*in)
	if err != nil {
		return err
	}
	defer f.Close()
	res, meta, warnings, err := collect(f)
	if err != nil {
		return fmt.Errorf("%s: %w", *in, err)
	}
	report(out, res, meta, warnings)
	return nil
}

// cell prints a median with its range over the runs, "n/a" without runs.
func cell(r results, path, metric, format string) string {
	s, ok := r.stat(path, metric)
	if !ok {
		return "n/a"
	}
	if s.n == 1 || s.lo == s.hi {
		return fmt.Sprintf(format, s.med)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", s.med, s.lo, s.hi)
}

func report(w io.Writer, r results, meta *runMeta, warnings []string) {
	if meta != nil {
		fmt.Fprintf(w, "vmesh services as %s; %d runs per measurement; machine: %s\n", meta.Mode, meta.Runs, meta.Machine)
		fmt.Fprintf(w, "load average before: %s; after: %s\n", meta.LoadBefore, meta.LoadAfter)
	}
	if s, ok := r.stat("machine", "busy"); ok {
		fmt.Fprintf(w, "the machine without this benchmark, sampled for 1 s before each measurement: %.0f%% busy (median; %.0f–%.0f%%) over %d samples\n", s.med, s.lo, s.hi, s.n)
	}
	fmt.Fprintln(w, "\nMedian of the runs, (min–max) over the runs. Latency in µs.")
	fmt.Fprintln(w, "\nHTTP/1.1, 1 KB responses, 1,000 req/s over 16 connections; gRPC unary (1 KB ping), same rate:")
	latencyTable(w, r, "", false)
	fmt.Fprintln(w, "\nAdded over direct (each run minus the direct run of the same round), µs:")
	latencyTable(w, r, "-added", true)
	fmt.Fprintln(w, "\nClosed loop (16 connections, as fast as they go) and one TCP stream; CPU and RSS are the proxies' (both hops):")
	fmt.Fprintln(w, "\n| path | max req/s | req per proxy CPU-s | proxy CPU µs per req | TCP MB/s | RSS MiB | peak RSS MiB |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, p := range paths {
		if len(r[p.key]) == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", p.label,
			cell(r, p.key, "maxqps", "%.0f"), cell(r, p.key, "req-per-cpu-s", "%.0f"), cell(r, p.key, "cpu-us-per-req", "%.1f"),
			cell(r, p.key, "tput", "%.0f"), cell(r, p.key, "rss", "%.1f"), cell(r, p.key, "hwm", "%.1f"))
	}
	memoryTable(w, r)
	ratios(w, r)
	if len(warnings) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		for _, s := range warnings {
			fmt.Fprintln(w, "  - "+s)
		}
	}
}

// memoryTable: the proxies' RSS idle (configured, before any load), in
// the middle of the fixed-rate HTTP run, and after the closed loop.
func memoryTable(w io.Writer, r results) {
	var rows []string
	for _, p := range paths {
		if _, ok := r.stat(p.key, "rss-idle"); !ok {
			continue
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s |", p.label,
			cell(r, p.key, "rss-idle", "%.1f"), cell(r, p.key, "rss-rate", "%.1f"), cell(r, p.key, "rss", "%.1f")))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nMemory: the proxies' RSS in MiB (both hops: the mesh path's is two agents), idle before any load, during the HTTP run at the fixed rate, after the closed loop:")
	fmt.Fprintln(w, "\n| path | idle | at the fixed rate | after the closed loop |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	for _, row := range rows {
		fmt.Fprintln(w, row)
	}
}

// ratios compares the vmesh mesh path with each peer, on the medians:
// vmesh ÷ peer, so for latency, CPU per request and memory below 1 is
// better for vmesh, for req per CPU-s and throughput above 1 is.
func ratios(w io.Writer, r results) {
	metrics := []struct{ key, label string }{
		{"http-p50-added", "HTTP p50 added"},
		{"http-p90-added", "HTTP p90 added"},
		{"http-p99-added", "HTTP p99 added"},
		{"grpc-p50-added", "gRPC p50 added"},
		{"grpc-p99-added", "gRPC p99 added"},
		{"req-per-cpu-s", "req per proxy CPU-s"},
		{"maxqps", "max req/s"},
		{"tput", "TCP MB/s"},
		{"rss", "RSS"},
	}
	var peers []string
	for _, p := range []string{"nginx", "haproxy", "nginx-l4", "haproxy-l4"} {
		if len(r[p]) > 0 {
			peers = append(peers, p)
		}
	}
	if len(r["vmesh-mesh"]) == 0 || len(peers) == 0 {
		return
	}
	fmt.Fprintln(w, "\nRatios, vmesh mesh ÷ peer (medians). Latency, RSS: < 1 is better for vmesh; req per CPU-s, req/s, MB/s: > 1 is:")
	fmt.Fprintf(w, "\n| metric | %s |\n", strings.Join(peers, " | "))
	fmt.Fprintf(w, "|---|%s\n", strings.Repeat("---:|", len(peers)))
	for _, m := range metrics {
		v, ok := r.stat("vmesh-mesh", m.key)
		row := "| " + m.label + " |"
		for _, p := range peers {
			s, ok2 := r.stat(p, m.key)
			switch {
			case !ok || !ok2:
				row += " n/a |"
			case s.med <= 0 || math.IsNaN(v.med/s.med):
				row += fmt.Sprintf(" %.0f vs %.0f |", v.med, s.med)
			default:
				row += fmt.Sprintf(" %.2f |", v.med/s.med)
			}
		}
		fmt.Fprintln(w, row)
	}
}

// latencyTable prints the HTTP and gRPC percentiles of every path with
// results: the measured ones (suffix "") or those added over direct
// ("-added", where direct itself has no row).
func latencyTable(w io.Writer, r results, suffix string, skipDirect bool) {
	fmt.Fprintln(w, "\n| path | HTTP p50 | HTTP p90 | HTTP p99 | gRPC p50 | gRPC p99 |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for _, p := range paths {
		if (skipDirect && p.key == "direct") || len(r[p.key]) == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s |", p.label)
		for _, m := range []string{"http-p50", "http-p90", "http-p99", "grpc-p50", "grpc-p99"} {
			fmt.Fprintf(w, " %s |", cell(r, p.key, m+suffix, "%.0f"))
		}
		fmt.Fprintln(w)
	}
}
