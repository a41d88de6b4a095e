package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// results writes a results file as the script does: three rounds of
// direct, vmesh-mesh and nginx.
func resultsFile() string {
	var b strings.Builder
	b.WriteString(`{"meta":{"mode":"tcp","runs":3,"machine":"test box","load_before":"0.1","load_after":"0.2"}}` + "\n")
	line := func(path, test string, run int, extra string) {
		fmt.Fprintf(&b, `{"path":%q,"test":%q,"run":%d,%s}`+"\n", path, test, run, extra)
	}
	for run := 1; run <= 3; run++ {
		d := float64(run) // each round a little slower: the pairing takes it out
		line("direct", "http", run, fmt.Sprintf(`"result":{"requested_qps":1000,"actual_qps":1000,"count":10000,"errors":0,"p50_us":%g,"p90_us":%g,"p99_us":%g}`, 100+d, 200+d, 400+d))
		line("vmesh-mesh", "http", run, fmt.Sprintf(`"result":{"requested_qps":1000,"actual_qps":1000,"count":10000,"errors":0,"p50_us":%g,"p90_us":%g,"p99_us":%g}`, 150+d, 300+d, 600+d))
		line("nginx", "http", run, fmt.Sprintf(`"result":{"requested_qps":1000,"actual_qps":1000,"count":10000,"errors":0,"p50_us":%g,"p90_us":%g,"p99_us":%g}`, 200+d, 400+d, 800+d))
		line("vmesh-mesh", "maxqps", run, fmt.Sprintf(`"cpu_s":%g,"result":{"actual_qps":20000,"count":100000,"errors":0}`, 2.0+float64(run-2)*0.5))
		line("nginx", "maxqps", run, `"cpu_s":4,"result":{"actual_qps":10000,"count":100000,"errors":0}`)
		line("vmesh-mesh", "tput", run, fmt.Sprintf(`"result":{"mb_per_s":%d,"errors":0}`, 600+run*10))
		line("vmesh-mesh", "rss", run, `"rss_kb":81920,"hwm_kb":102400`)
		line("nginx", "rss", run, `"rss_kb":40960,"hwm_kb":40960`)
		line("vmesh-mesh", "rss_rate", run, fmt.Sprintf(`"rss_kb":%d`, 71680+1024*run))
		line("direct", "busy", run, fmt.Sprintf(`"busy_pct":%d`, 10*run))
	}
	line("vmesh-mesh", "rss_idle", 1, `"rss_kb":65536`)
	// A run that fell behind and one with errors are reported.
	line("nginx", "grpc", 1, `"result":{"requested_qps":1000,"actual_qps":900,"count":9000,"errors":3,"p50_us":300,"p90_us":400,"p99_us":500}`)
	return b.String()
}

func TestReport(t *testing.T) {
	res, meta, warnings, err := collect(strings.NewReader(resultsFile()))
	if err != nil {
		t.Fatal(err)
	}
	if meta == nil || meta.Runs != 3 || meta.Machine != "test box" {
		t.Fatalf("meta = %+v", meta)
	}
	for _, tc := range []struct {
		path, metric string
		med, lo, hi  float64
	}{
		{"direct", "http-p50", 102, 101, 103},
		{"vmesh-mesh", "http-p50-added", 50, 50, 50},
		{"vmesh-mesh", "http-p99-added", 200, 200, 200},
		{"nginx", "http-p90-added", 200, 200, 200},
		{"vmesh-mesh", "req-per-cpu-s", 50000, 40000, 66666.666},
		{"nginx", "req-per-cpu-s", 25000, 25000, 25000},
		{"vmesh-mesh", "tput", 620, 610, 630},
		{"vmesh-mesh", "rss", 80, 80, 80},
		{"vmesh-mesh", "hwm", 100, 100, 100},
	} {
		s, ok := res.stat(tc.path, tc.metric)
		if !ok || s.n != 3 || !near(s.med, tc.med) || !near(s.lo, tc.lo) || !near(s.hi, tc.hi) {
			t.Errorf("%s %s = %+v (ok %v), want median %g in [%g, %g] over 3 runs", tc.path, tc.metric, s, ok, tc.med, tc.lo, tc.hi)
		}
	}
	if len(warnings) != 2 || !strings.Contains(warnings[0], "3 errors") || !strings.Contains(warnings[1], "900 req/s of the 1000") {
		t.Errorf("warnings = %q", warnings)
	}
	var out bytes.Buffer
	report(&out, res, meta, warnings)
	for _, want := range []string{
		"| vmesh mesh: agent → mTLS → agent | 50 | 100 | 200 | n/a | n/a |", // added over direct
		"| HTTP p50 added | 0.50 |",      // vmesh 50 ÷ nginx 100
		"| req per proxy CPU-s | 2.00 |", // 50000 ÷ 25000
		"| RSS | 2.00 |",
		"| TCP MB/s | n/a |", // nginx has no TCP route
		"| vmesh mesh: agent → mTLS → agent | 64.0 | 72.0 (71.0–73.0) | 80.0 |", // memory: idle, at the rate, after
		"620 (610–630)",
		"20% busy (median; 10–30%) over 3 samples",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestReportBadInput(t *testing.T) {
	for in, want := range map[string]string{
		"{}\n":   "line 1: no path or test",
		"\n{x\n": "line 2",
		`{"path":"direct","test":"nope","run":1}`: `unknown test "nope"`,
	} {
		if _, _, _, err := collect(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("collect(%q) = %v, want %q", in, err, want)
		}
	}
}

func near(a, b float64) bool { d := a - b; return d < 0.01 && d > -0.01 }
