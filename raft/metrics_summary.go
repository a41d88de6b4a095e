package raft

import (
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	gometrics "github.com/armon/go-metrics"
	gmprom "github.com/armon/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// summarySink is the go-metrics sink MetricsSink installs: armon's
// Prometheus sink for gauges and counters, and its own summaries for
// samples (raft's and bbolt's timers). Armon's sink makes each sample key
// a client_golang Summary with three quantiles over 10 s in five age
// buckets, and each bucket's quantile stream allocates a 500-sample
// buffer up front: about 68 KB per series whether it sees one sample or
// thousands, 2 MB of an idle leader's 6 MB live heap. windowSummary
// serves the same series (name, labels, the 0.5, 0.9 and 0.99 quantiles
// of the last 10 s, NaN when it saw none, and _sum and _count since the
// start) from the samples themselves, held only while they are in the
// window.
type summarySink struct {
	*gmprom.PrometheusSink
	summaries sync.Map // flattened key and labels -> *windowSummary
}

const (
	// summaryMaxAge is the window of a summary's quantiles, as armon's.
	summaryMaxAge = 10 * time.Second
	// summaryMaxSamples bounds a summary's window: past it the oldest
	// sample goes first, so a busy series' quantiles are of its last
	// summaryMaxSamples samples.
	summaryMaxSamples = 1024
)

// summaryQuantiles are armon's objectives.
var summaryQuantiles = []float64{0.5, 0.9, 0.99}

// forbiddenChars is armon's: a key's parts joined with "_", these made "_".
var forbiddenChars = strings.NewReplacer(" ", "_", ".", "_", "=", "_", "-", "_", "/", "_")

func (s *summarySink) AddSample(parts []string, val float32) {
	s.AddSampleWithLabels(parts, val, nil)
}

func (s *summarySink) AddSampleWithLabels(parts []string, val float32, labels []gometrics.Label) {
	s.observe(parts, float64(val), labels, time.Now())
}

func (s *summarySink) observe(parts []string, val float64, labels []gometrics.Label, now time.Time) {
	key := forbiddenChars.Replace(strings.Join(parts, "_"))
	hash := key
	for _, l := range labels {
		hash += ";" + l.Name + "=" + l.Value
	}
	v, ok := s.summaries.Load(hash)
	if !ok {
		constLabels := prometheus.Labels{}
		for _, l := range labels {
			constLabels[l.Name] = l.Value
		}
		v, _ = s.summaries.LoadOrStore(hash, &windowSummary{desc: prometheus.NewDesc(key, key, nil, constLabels)})
	}
	v.(*windowSummary).observe(val, now)
}

// Collect is armon's gauges and counters, then the summaries.
func (s *summarySink) Collect(ch chan<- prometheus.Metric) {
	s.PrometheusSink.Collect(ch)
	now := time.Now()
	s.summaries.Range(func(_, v any) bool {
		if m, err := v.(*windowSummary).metric(now); err == nil {
			ch <- m
		}
		return true
	})
}

// windowSummary is one summary series: the count and sum of every sample,
// and the samples of the last summaryMaxAge, oldest first in a ring that
// grows as needed up to summaryMaxSamples.
type windowSummary struct {
	desc  *prometheus.Desc
	mu    sync.Mutex
	count uint64
	sum   float64
	ring  []timedSample
	head  int // the oldest sample
	n     int
}

type timedSample struct {
	at  int64 // unix nanoseconds
	val float64
}

func (w *windowSummary) observe(val float64, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.count++
	w.sum += val
	w.expireLocked(now)
	if w.n == len(w.ring) {
		if len(w.ring) < summaryMaxSamples {
			ring := make([]timedSample, min(max(2*len(w.ring), 8), summaryMaxSamples))
			for i := range w.n {
				ring[i] = w.ring[(w.head+i)%len(w.ring)]
			}
			w.ring, w.head = ring, 0
		} else { // full: the oldest goes
			w.head = (w.head + 1) % len(w.ring)
			w.n--
		}
	}
	w.ring[(w.head+w.n)%len(w.ring)] = timedSample{at: now.UnixNano(), val: val}
	w.n++
}

// expireLocked drops the samples older than summaryMaxAge, and the ring
// itself once it is empty: a series that stopped holds no slots.
func (w *windowSummary) expireLocked(now time.Time) {
	oldest := now.Add(-summaryMaxAge).UnixNano()
	for w.n > 0 && w.ring[w.head].at < oldest {
		w.head = (w.head + 1) % len(w.ring)
		w.n--
	}
	if w.n == 0 {
		w.ring, w.head = nil, 0
	}
}

// metric is the summary as of now: the nearest-rank quantiles of the
// window's samples (NaN without any), and the count and sum of all.
func (w *windowSummary) metric(now time.Time) (prometheus.Metric, error) {
	w.mu.Lock()
	w.expireLocked(now)
	vals := make([]float64, w.n)
	for i := range w.n {
		vals[i] = w.ring[(w.head+i)%len(w.ring)].val
	}
	count, sum := w.count, w.sum
	w.mu.Unlock()
	slices.Sort(vals)
	qs := make(map[float64]float64, len(summaryQuantiles))
	for _, q := range summaryQuantiles {
		qs[q] = quantile(vals, q)
	}
	return prometheus.NewConstSummary(w.desc, count, sum, qs)
}

// quantile is the nearest-rank q-quantile of sorted; NaN of none.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
