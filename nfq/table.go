package nfq

import (
	"hash/maphash"
	"net/netip"
	"sync"
)

// tuple is one direction of a flow as its packets carry it.
type tuple struct {
	src, dst netip.AddrPort
}

const shards = 64

// table maps both directions' tuples of the flows being set up to their
// flow. Queues hash flows by address, so a flow's client and backend
// packets can arrive on different queues: the table is shared and sharded.
type table struct {
	seed   maphash.Seed
	shards [shards]struct {
		sync.Mutex
		m map[tuple]*flow
	}
}

func newTable() *table {
	t := &table{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[tuple]*flow)
	}
	return t
}

func (t *table) shard(k tuple) int {
	return int(maphash.Comparable(t.seed, k) % shards)
}

func (t *table) get(k tuple) *flow {
	s := &t.shards[t.shard(k)]
	s.Lock()
	f := s.m[k]
	s.Unlock()
	return f
}

// claim maps k to f unless a flow falg is still setting up holds it; a
// finished flow lingering on k gives way. It reports whether it did.
func (t *table) claim(k tuple, f *flow) bool {
	s := &t.shards[t.shard(k)]
	s.Lock()
	defer s.Unlock()
	if old, taken := s.m[k]; taken && !old.done.Load() {
		return false
	}
	s.m[k] = f
	return true
}

// del removes k if it still maps to f.
func (t *table) del(k tuple, f *flow) {
	s := &t.shards[t.shard(k)]
	s.Lock()
	if s.m[k] == f {
		delete(s.m, k)
	}
	s.Unlock()
}

// each calls fn for every flow once per tuple it holds, outside the shard
// locks.
func (t *table) each(fn func(*flow)) {
	var fs []*flow
	for i := range t.shards {
		s := &t.shards[i]
		s.Lock()
		for _, f := range s.m {
			fs = append(fs, f)
		}
		s.Unlock()
	}
	for _, f := range fs {
		fn(f)
	}
}
