package bench

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"
)

// writerCounts are the concurrency levels every benchmark runs at.
var writerCounts = []int{1, 64}

// runWriters runs op b.N times, split across writers goroutines, with the
// timer running only while they do. op gets a distinct i in [0, b.N). It
// returns every operation's latency and fails the benchmark on the first
// error (after every writer has stopped, since Fatal must run here).
func runWriters(b *testing.B, writers int, op func(i int) error) []time.Duration {
	b.Helper()
	lat := make([]time.Duration, b.N)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range writers {
		// Writer w owns indexes [lo, hi): no locks around lat.
		lo, hi := b.N*w/writers, b.N*(w+1)/writers
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				start := time.Now()
				if err := op(i); err != nil {
					errs[w] = fmt.Errorf("writer %d, op %d: %w", w, i, err)
					return
				}
				lat[i] = time.Since(start)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	return lat
}

// reportLatency reports p50-ms, p99-ms and b.N per second of timed run as
// rateUnit (e.g. "applies/s").
func reportLatency(b *testing.B, lat []time.Duration, rateUnit string) {
	b.Helper()
	slices.Sort(lat)
	b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 99)), "p99-ms")
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, rateUnit)
	}
}

// percentile returns the nearest-rank p-th percentile of sorted (0 < p <= 100).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func TestPercentile(t *testing.T) {
	ten := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{[]time.Duration{7}, 50, 7},
		{[]time.Duration{7}, 99, 7},
		{ten, 50, 5},
		{ten, 90, 9},
		{ten, 99, 10},
		{ten, 100, 10},
		{ten, 1, 1},
	} {
		if got := percentile(tc.in, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.in, tc.p, got, tc.want)
		}
	}
}
