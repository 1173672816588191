package nfq

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"falg/seqnat"
)

// Record is what falg knows of a spliced flow beyond the conntrack entry.
type Record struct {
	Client   netip.AddrPort `json:"client"`
	Asked    netip.AddrPort `json:"asked"`
	Backend  netip.AddrPort `json:"backend"`
	Source   netip.AddrPort `json:"source"` // what the backend sees
	Service  string         `json:"service"`
	Protocol string         `json:"protocol"`
	Name     string         `json:"name"`
	Start    time.Time      `json:"start"`

	reserve *portReservation
}

// Records are the spliced flows of this falg, keyed by the client's tuple.
// Conntrack destroy events remove them.
type Records struct {
	mu sync.Mutex
	m  map[tuple]Record
}

func newRecords() *Records { return &Records{m: map[tuple]Record{}} }

func (r *Records) add(rec Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := tuple{rec.Client, rec.Asked}
	if old, ok := r.m[k]; ok {
		old.reserve.Close()
	}
	r.m[k] = rec
}

func (r *Records) remove(k tuple) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := r.m[k]; ok {
		rec.reserve.Close()
		delete(r.m, k)
	}
}

// All returns every record.
func (r *Records) All() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Record, 0, len(r.m))
	for _, rec := range r.m {
		out = append(out, rec)
	}
	return out
}

// closeAll releases every record's port reservation.
func (r *Records) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, rec := range r.m {
		rec.reserve.Close()
		delete(r.m, k)
	}
}

// watch removes records whose conntrack entries die, until ctx ends. When
// the kernel drops events, it resynchronises from the table by mark.
func (r *Records) watch(ctx context.Context, ct *seqnat.Conn, mark uint32, log *slog.Logger) {
	ev, err := seqnat.ListenDestroy()
	if err != nil {
		log.Error("nfq: conntrack events unavailable; records are not pruned", "err", err)
		return
	}
	defer ev.Close()
	if err := ev.FilterMark(mark, mark); err != nil {
		log.Warn("nfq: conntrack events: every entry's destroy is read", "err", err)
	}
	for {
		evs, err := ev.Receive(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, unix.ENOBUFS):
			r.resync(ct, mark, log)
			continue
		case err != nil:
			log.Warn("nfq: conntrack events", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		for _, e := range evs {
			if e.Proto == unix.IPPROTO_TCP && e.Mark&mark == mark {
				r.remove(tuple{e.Orig.Src, e.Orig.Dst})
			}
		}
	}
}

// resync drops records whose entries are gone.
func (r *Records) resync(ct *seqnat.Conn, mark uint32, log *slog.Logger) {
	entries, err := ct.List(mark, mark)
	if err != nil {
		log.Warn("nfq: conntrack list", "err", err)
		return
	}
	live := map[tuple]bool{}
	for _, e := range entries {
		live[tuple{e.Orig.Src, e.Orig.Dst}] = true
	}
	r.mu.Lock()
	var dead []tuple
	for k := range r.m {
		if !live[k] {
			dead = append(dead, k)
		}
	}
	r.mu.Unlock()
	for _, k := range dead {
		r.remove(k)
	}
}
