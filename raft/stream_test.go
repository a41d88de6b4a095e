package raft

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
)

// The deltas events the history builds from shared per-entry bytes are
// the bytes json.Marshal makes of the same SubscribeEvent, alone and
// batched, and a subscriber one entry behind gets the entry's own bytes.
func TestHistoryEventEncoding(t *testing.T) {
	h := newHistory(4, testkit.Discard())
	var cmds [][]byte
	h.mu.Lock()
	for i := range 6 {
		buf, err := encodeCommand(registerService("h", "svc-"+string(rune('a'+i)), "web"))
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, buf)
		h.recordLocked(uint64(10+i), buf, nil)
	}
	h.mu.Unlock()
	// The ring keeps 4 entries: indexes 12..15.
	for _, tc := range []struct {
		from uint64
		want []Delta
	}{
		{14, []Delta{{15, cmds[5]}}},
		{11, []Delta{{12, cmds[2]}, {13, cmds[3]}, {14, cmds[4]}, {15, cmds[5]}}},
		{13, []Delta{{14, cmds[4]}, {15, cmds[5]}}},
	} {
		s := &subscriber{dropped: make(chan struct{})}
		s.cursor.Store(tc.from)
		ev, last, cur, _, err := h.take(s)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(&SubscribeEvent{Kind: EventDeltas, Deltas: tc.want})
		if err != nil {
			t.Fatal(err)
		}
		if string(ev) != string(want) {
			t.Errorf("from %d: event\n%s\nwant\n%s", tc.from, ev, want)
		}
		if last != 15 || cur != 15 {
			t.Errorf("from %d: last delta %d, current to %d; want 15, 15", tc.from, last, cur)
		}
		var got SubscribeEvent
		if err := json.Unmarshal(ev, &got); err != nil || len(got.Deltas) != len(tc.want) {
			t.Errorf("from %d: the event does not decode to %d deltas: %v", tc.from, len(tc.want), err)
		}
		if len(tc.want) == 1 && &ev[0] != &h.ring[(h.head+h.n-1)%len(h.ring)].event[0] {
			t.Errorf("from %d: a subscriber one entry behind got a copy, not the entry's shared bytes", tc.from)
		}
		// Nothing more: no event, still current.
		ev, _, cur, _, err = h.take(s)
		if err != nil || ev != nil || cur != 15 {
			t.Errorf("from %d: second take = %q, %d, %v; want nothing at 15", tc.from, ev, cur, err)
		}
	}
}

func TestProgressEncoding(t *testing.T) {
	for _, idx := range []uint64{0, 1, 1234567890123} {
		want, err := json.Marshal(&SubscribeEvent{Kind: EventProgress, Index: idx})
		if err != nil {
			t.Fatal(err)
		}
		if got := encodeProgress(idx); string(got) != string(want) {
			t.Errorf("encodeProgress(%d) = %s; json.Marshal makes %s", idx, got, want)
		}
	}
}

// The history's ring starts empty and doubles up to its size, keeping
// its entries in order across each growth and after it wraps; a reset
// lets the slots go.
func TestHistoryRingGrows(t *testing.T) {
	h := newHistory(200, testkit.Discard())
	if h.ring != nil {
		t.Fatalf("a new history holds %d slots before any entry", len(h.ring))
	}
	buf, err := encodeCommand(registerService("h", "svc", "web"))
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	var lens []int
	for i := 1; i <= 250; i++ {
		h.recordLocked(uint64(i), buf, nil)
		if len(lens) == 0 || lens[len(lens)-1] != len(h.ring) {
			lens = append(lens, len(h.ring))
		}
	}
	h.mu.Unlock()
	if want := []int{64, 128, 200}; fmt.Sprint(lens) != fmt.Sprint(want) {
		t.Errorf("ring sizes %v, want %v", lens, want)
	}
	if h.n != 200 || h.floor != 50 {
		t.Fatalf("n %d, floor %d; want 200 entries after 50", h.n, h.floor)
	}
	for i := range h.n {
		if got := h.ring[(h.head+i)%len(h.ring)].index; got != uint64(51+i) {
			t.Fatalf("entry %d has index %d, want %d", i, got, 51+i)
		}
	}
	s := &subscriber{dropped: make(chan struct{})}
	s.cursor.Store(240)
	_, last, _, _, err := h.take(s)
	if err != nil || last != 250 {
		t.Errorf("take from 240: last delta %d, %v; want 250", last, err)
	}
	h.mu.Lock()
	h.resetLocked(250)
	h.mu.Unlock()
	if h.ring != nil || h.n != 0 {
		t.Errorf("after a reset the ring holds %d slots, %d entries", len(h.ring), h.n)
	}
}
