package nfq

import (
	"net/netip"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := newLimiter(10, 3)
	a, b := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::2")
	now := time.Unix(1000, 0)
	for i := range 3 {
		if !l.allow(a, now) {
			t.Fatalf("burst token %d refused", i)
		}
	}
	if l.allow(a, now) {
		t.Fatal("fourth flow in the same instant allowed past a burst of 3")
	}
	if !l.allow(b, now) {
		t.Fatal("another client was refused")
	}
	if !l.allow(a, now.Add(100*time.Millisecond)) || l.allow(a, now.Add(100*time.Millisecond)) {
		t.Fatal("want exactly one token after 1/rate seconds")
	}
	// Idle buckets are swept once full again.
	l.allow(b, now.Add(10*time.Second))
	if len(l.buckets) != 1 {
		t.Fatalf("%d buckets after the sweep, want 1", len(l.buckets))
	}
}

func TestLearnShift(t *testing.T) {
	var s service
	s.shift.Store(7)
	for _, c := range []struct{ seen, want int8 }{{9, 7}, {5, 5}, {6, 5}, {-1, 0}} {
		s.learnShift(c.seen)
		if got := int8(s.shift.Load()); got != c.want {
			t.Errorf("after a backend with shift %d: %d, want %d", c.seen, got, c.want)
		}
	}
}
