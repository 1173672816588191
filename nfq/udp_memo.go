package nfq

import (
	"sync"
	"time"
)

// udpMemoTTL is how long a relay flow's choice is remembered. Conntrack
// confirms a flow's first packet within microseconds, after which the
// flow's packets are no longer queued; the memo only covers packets that
// were queued behind the first, each with its own unconfirmed entry, which
// would otherwise get their own pick and clash with the first.
const udpMemoTTL = 2 * time.Second

// udpMemoSweep is how many additions pass between sweeps of expired entries.
const udpMemoSweep = 1024

// udpMemo remembers the mark given to recent udp relay flows.
type udpMemo struct {
	mu    sync.Mutex
	m     map[tuple]udpMemoEntry
	adds  int
	clock func() time.Time
}

type udpMemoEntry struct {
	mark    uint32
	expires time.Time
}

func newUDPMemo() *udpMemo {
	return &udpMemo{m: map[tuple]udpMemoEntry{}, clock: time.Now}
}

// get returns the mark of flow t if it was chosen within the TTL.
func (m *udpMemo) get(t tuple) (uint32, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.m[t]
	if !ok || m.clock().After(e.expires) {
		return 0, false
	}
	return e.mark, true
}

// put remembers mark for flow t, dropping expired entries now and then.
func (m *udpMemo) put(t tuple, mark uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock()
	m.adds++
	if m.adds%udpMemoSweep == 0 {
		for k, e := range m.m {
			if now.After(e.expires) {
				delete(m.m, k)
			}
		}
	}
	m.m[t] = udpMemoEntry{mark: mark, expires: now.Add(udpMemoTTL)}
}

// len is the number of entries, expired or not.
func (m *udpMemo) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.m)
}
