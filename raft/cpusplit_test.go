package raft

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/pprof"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// The scale benchmark runs servers and thousands of subscribers in one
// process, so the process's CPU time mixes both. Every goroutine the
// benchmark starts carries a profile label (side=server, side=client,
// side=bench; goroutines inherit their creator's labels), and a CPU
// profile taken over a phase is split by that label.

// sideLabel is the profile label that says whose goroutine this is.
const sideLabel = "side"

// withSide runs fn with the side label set, so every goroutine it starts
// is counted to that side.
func withSide(side string, fn func()) {
	pprof.Do(context.Background(), pprof.Labels(sideLabel, side), func(context.Context) { fn() })
}

// cpuSplit is the CPU time of one phase by side ("" for goroutines
// without the label: the runtime's GC workers and timers).
type cpuSplit map[string]time.Duration

// profileCPU profiles the process while fn runs and returns its CPU time
// by side; keep, when not nil, gets a copy of the profile. It fails when a
// CPU profile is already running (go test -cpuprofile).
func profileCPU(fn func(), keep io.Writer) (cpuSplit, error) {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		fn()
		return nil, err
	}
	fn()
	pprof.StopCPUProfile()
	if keep != nil {
		if _, err := keep.Write(buf.Bytes()); err != nil {
			return nil, err
		}
	}
	return splitProfile(&buf)
}

// splitProfile reads a gzipped profile.proto CPU profile and sums its
// samples' CPU nanoseconds (the second value) by the side label. It reads
// only the few fields it needs (sample = 2, string_table = 6; in a
// sample value = 2, label = 3; in a label key = 1, str = 2).
func splitProfile(r io.Reader) (cpuSplit, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	type sample struct {
		ns     int64
		labels [][2]int64 // key, str: string table indexes
	}
	var samples []sample
	var strs []string
	err = eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == 6 && typ == protowire.BytesType:
			strs = append(strs, string(v))
		case num == 2 && typ == protowire.BytesType:
			var s sample
			var values []int64
			err := eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
				switch {
				case num == 2 && typ == protowire.BytesType: // packed values
					for len(v) > 0 {
						x, n := protowire.ConsumeVarint(v)
						if n < 0 {
							return protowire.ParseError(n)
						}
						values = append(values, int64(x))
						v = v[n:]
					}
				case num == 2 && typ == protowire.VarintType:
					values = append(values, int64(x))
				case num == 3 && typ == protowire.BytesType:
					var kv [2]int64
					err := eachField(v, func(num protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
						if num == 1 || num == 2 {
							kv[num-1] = int64(x)
						}
						return nil
					})
					if err != nil {
						return err
					}
					s.labels = append(s.labels, kv)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(values) < 2 {
				return errors.New("a CPU profile sample without its nanoseconds")
			}
			s.ns = values[1]
			samples = append(samples, s)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the CPU profile: %w", err)
	}
	str := func(i int64) string {
		if i >= 0 && int(i) < len(strs) {
			return strs[i]
		}
		return ""
	}
	out := cpuSplit{}
	for _, s := range samples {
		side := ""
		for _, kv := range s.labels {
			if str(kv[0]) == sideLabel {
				side = str(kv[1])
			}
		}
		out[side] += time.Duration(s.ns)
	}
	return out, nil
}

// eachField calls fn for each field of the protobuf message b: v is a
// length-delimited field's bytes, x a varint's value.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
