package nfq

import (
	"net/netip"
	"sync"
	"time"
)

// limiter allows each client address rate new flows per second, in bursts
// of burst: one token bucket per address. Buckets that have filled up again
// are swept once a second, so memory follows the number of recently active
// clients.
type limiter struct {
	rate, burst float64
	mu          sync.Mutex
	buckets     map[netip.Addr]*bucket
	swept       time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(rate, burst int) *limiter {
	return &limiter{rate: float64(rate), burst: float64(burst), buckets: map[netip.Addr]*bucket{}}
}

// allow takes a token for a, if it has one.
func (l *limiter) allow(a netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Second {
		l.sweep(now)
	}
	b := l.buckets[a]
	if b == nil {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[a] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *limiter) sweep(now time.Time) {
	l.swept = now
	for a, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, a)
		}
	}
}
