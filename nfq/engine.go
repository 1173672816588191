package nfq

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"falg/config"
	"falg/nft"
	"falg/protocol"
	"falg/route"
	"falg/seqnat"
)

// EngineStats counts flow outcomes. Fields are atomic.
type EngineStats struct {
	Flows       atomic.Uint64 // SYNs that started a flow
	Spliced     atomic.Uint64 // flows handed to the kernel
	Rejected    atomic.Uint64 // no route: RST or error reply
	Malformed   atomic.Uint64 // first bytes the parser refused
	Silent      atomic.Uint64 // client sent no data within first_data
	BackendFail atomic.Uint64 // backend attempts refused or timed out
	Failed      atomic.Uint64 // flows no backend took
	PendingFull atomic.Uint64 // SYNs refused: too many flows in setup
	Limited     atomic.Uint64 // SYNs refused by a service's limits
	Unknown     atomic.Uint64 // queued packets of no flow falg sets up: accepted
	Late        atomic.Uint64 // packets of handed-over flows queued before their pending entry went
	Undecodable atomic.Uint64 // queued packets that did not parse
	HandoverErr atomic.Uint64 // conntrack creates that failed
	Pending     atomic.Int64  // flows in setup now

	DNSQueries   atomic.Uint64 // DNS messages to a dns listen over UDP
	DNSRefused   atomic.Uint64 // of those, answered REFUSED by falg: no route (or none of the client's family)
	DNSFormErr   atomic.Uint64 // of those, answered FORMERR (NOTIMP for another opcode) by falg
	DNSDropped   atomic.Uint64 // of those, dropped: shorter than a DNS header, or a response
	UDPFlows     atomic.Uint64 // udp relay flows given a backend
	UDPNoBackend atomic.Uint64 // udp relay flows dropped: no backend of their family
}

// Observer is told what becomes of flows, for metrics. Its methods are
// called on the packet path and must not block.
type Observer interface {
	// Outcome reports a flow's end: spliced, rejected, malformed, no-data
	// or failed, the route index (route.Default for the default backends,
	// or when no route was chosen) and the time since its SYN.
	Outcome(service, protocol string, route int, outcome string, setup time.Duration)
	// BackendFailed reports a backend attempt that was refused, timed out
	// or could not be made.
	BackendFailed(service string, backend netip.AddrPort, err error)
}

// EngineConfig is what an Engine needs besides the config.
type EngineConfig struct {
	Observer Observer // may be nil
	Config   *config.Config
	Injector *Injector
	Log      *slog.Logger
	Stats    *EngineStats
}

// Engine is the handshake engine: it answers clients' SYNs itself, reads
// their first bytes, picks a backend, opens the connection to it and hands
// the pair to the kernel as one conntrack entry with NAT and seqadj.
type Engine struct {
	cfg      *config.Config
	log      *slog.Logger
	stats    *EngineStats
	inj      *Injector
	ct       *seqnat.Conn
	nftDel   *nft.Pending // pending deletes: housekeep only
	nftAdd   *nft.Pending // pending adds, for backends outside the static set
	routing  atomic.Pointer[routing]
	flows    *table
	max      int64
	chores   chores
	locals   sync.Map // netip.Addr -> netip.Addr: router address toward a backend
	records  *Records
	observer Observer
	udp      atomic.Pointer[udpHandler]
	debug    bool // log every queued packet
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

type service struct {
	cfg    *config.Service
	routes *route.Table
	pool   sync.Pool // protocol.Parser
	popts  protocol.Options
	// pending counts the service's flows in setup, for Limits.MaxPending.
	pending atomic.Int64
	// shift is the window shift falg offers the service's clients: the
	// smallest its backends were seen to use (7 until one is seen), never
	// more, because after the hand-over the client reads the backend's
	// window fields with it.
	shift atomic.Int32
	// noTS is set once a backend answered falg's SYN without timestamps.
	// falg agrees to them with a client before it knows the backend, and
	// after the hand-over that backend's segments reach the client without
	// any, which a strict RFC 7323 client drops; so from then on the
	// service's clients are not offered them.
	noTS    atomic.Bool
	limiter *limiter // nil: no per-client rate
}

func (s *service) parser() (protocol.Parser, error) {
	if p, ok := s.pool.Get().(protocol.Parser); ok {
		return p, nil
	}
	name := string(s.cfg.Protocol)
	if s.cfg.Protocol == config.Proxy {
		name = "none" // the PROXY header itself decides; see flow.feed
	}
	return protocol.New(name, s.popts)
}

// learnShift lowers the service's client window shift to a backend's.
func (s *service) learnShift(backend int8) {
	b := int32(max(backend, 0))
	for cur := s.shift.Load(); b < cur && !s.shift.CompareAndSwap(cur, b); cur = s.shift.Load() {
	}
}

// trusts reports whether a connects from an upstream whose PROXY header
// the service consumes.
func (s *service) trusts(a netip.Addr) bool {
	for _, p := range s.cfg.AcceptProxy {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// proxyHeader is the PROXY protocol header the service sends its backends
// for a flow from src to dst, or nil.
func (s *service) proxyHeader(src, dst netip.AddrPort) []byte {
	switch s.cfg.ProxyProtocol {
	case "v1":
		return protocol.AppendProxyV1(nil, src, dst)
	case "v2":
		return protocol.AppendProxyV2(nil, src, dst)
	}
	return nil
}

func (s *service) release(p protocol.Parser) {
	if p != nil {
		p.Reset()
		s.pool.Put(p)
	}
}

// NewEngine prepares an engine for c. Close releases it.
func NewEngine(ec EngineConfig) (_ *Engine, err error) {
	c := ec.Config
	e := &Engine{
		cfg:      c,
		log:      ec.Log,
		stats:    ec.Stats,
		inj:      ec.Injector,
		flows:    newTable(),
		max:      int64(c.MaxPending),
		records:  newRecords(),
		observer: ec.Observer,
		debug:    ec.Log.Enabled(context.Background(), slog.LevelDebug),
	}
	r, err := newRouting(c)
	if err != nil {
		return nil, err
	}
	e.routing.Store(r)
	u, err := newUDPHandler(c, ec.Injector, ec.Log, ec.Stats)
	if err != nil {
		return nil, err
	}
	e.udp.Store(u)

	defer func() {
		if err != nil {
			e.closeSockets()
		}
	}()
	if e.ct, err = seqnat.Dial(); err != nil {
		return nil, err
	}
	if e.nftDel, err = nft.OpenPending(); err != nil {
		return nil, err
	}
	if e.nftAdd, err = nft.OpenPending(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.stop = cancel
	e.wg.Add(2)
	go func() {
		defer e.wg.Done()
		t := time.NewTicker(housekeepInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				e.housekeep()
			}
		}
	}()
	go func() {
		defer e.wg.Done()
		e.records.watch(ctx, e.ct, c.FlowMark(), e.log)
	}()
	return e, nil
}

func (e *Engine) closeSockets() {
	if e.ct != nil {
		e.ct.Close()
	}
	if e.nftDel != nil {
		e.nftDel.Close()
	}
	if e.nftAdd != nil {
		e.nftAdd.Close()
	}
}

// Close stops the engine's goroutines, aborts the flows still in setup and
// closes its sockets.
func (e *Engine) Close() error {
	e.flows.each(func(f *flow) {
		f.mu.Lock()
		f.fail(protocol.Unreachable, "falg stopping")
		f.disarm() // a spliced flow may still be resending its reply
		f.mu.Unlock()
	})
	e.stop()
	e.wg.Wait()
	e.records.closeAll()
	e.closeSockets()
	return nil
}

// Records are the spliced flows falg knows the names of.
func (e *Engine) Records() *Records { return e.records }

// routing is what a configuration says about where flows go. The engine
// swaps it whole on reload; a flow keeps the service it started with.
type routing struct {
	byListen map[config.Listen]*service
	// backends are the fixed TCP backends: the ruleset queues their
	// answers by itself; others need a pending-set entry.
	backends map[netip.AddrPort]bool
}

func newRouting(c *config.Config) (*routing, error) {
	r := &routing{byListen: map[config.Listen]*service{}, backends: map[netip.AddrPort]bool{}}
	for i := range c.Services {
		sc := &c.Services[i]
		if !sc.Protocol.TCP() || sc.Dataplane == "relay" {
			continue
		}
		rt, err := route.New(sc)
		if err != nil {
			return nil, err
		}
		s := &service{cfg: sc, routes: rt, popts: protocol.Options{Users: sc.Users}}
		s.shift.Store(7)
		if sc.Limits.ClientRate > 0 {
			s.limiter = newLimiter(sc.Limits.ClientRate, sc.Limits.ClientBurst)
		}
		if _, err := s.parser(); err != nil {
			return nil, fmt.Errorf("nfq: service %s: %w", sc.Name, err)
		}
		for _, l := range sc.Listen {
			r.byListen[l] = s
		}
		for _, rt := range sc.Routes {
			for _, b := range rt.Backends {
				if !b.Requested {
					r.backends[b.Addr] = true
				}
			}
		}
		for _, b := range sc.Default {
			r.backends[b.Addr] = true
		}
	}
	return r, nil
}

// lookupService finds the service listening on dst.
func (r *routing) lookupService(dst netip.AddrPort) *service {
	if s := r.byListen[config.Listen{Addr: dst.Addr(), Port: dst.Port()}]; s != nil {
		return s
	}
	return r.byListen[config.Listen{Port: dst.Port()}]
}

// Reload makes new flows use c's services and routes. Flows in setup
// finish with the routes they started with; spliced flows are the
// kernel's and do not notice. Settings the engine cannot change while it
// runs (queues, marks, max_pending) must be equal; the caller checks.
func (e *Engine) Reload(c *config.Config) error {
	r, err := newRouting(c)
	if err != nil {
		return err
	}
	u, err := newUDPHandler(c, e.inj, e.log, e.stats)
	if err != nil {
		return err
	}
	e.routing.Store(r)
	e.udp.Store(u)
	return nil
}

// Packet handles one queued packet. It implements Handler.
func (e *Engine) Packet(q *Queue, p *Packet) {
	var s segment
	if err := parseSegment(p.Data, &s); err != nil {
		e.stats.Undecodable.Add(1)
		e.log.Debug("nfq: undecodable packet accepted", "queue", q.Num, "len", len(p.Data), "err", err)
		q.Verdict(p.ID, Accept)
		return
	}
	if e.debug {
		e.log.Debug("queued", "queue", q.Num, "id", p.ID, "src", s.src, "dst", s.dst,
			"flags", s.flags, "seq", s.seq, "ack", s.ack, "len", len(s.payload))
	}
	if s.proto != 6 {
		e.udp.Load().packet(q, p, &s)
		return
	}
	syn := s.flags&(flagSYN|flagACK|flagRST|flagFIN) == flagSYN
	if f := e.flows.get(tuple{s.src, s.dst}); f != nil {
		f.mu.Lock()
		if !(syn && f.over() && s.seq != f.cISN) {
			f.packet(q, p, &s)
			f.mu.Unlock()
			return
		}
		// A new connection on the tuple of a flow that is over.
		f.mu.Unlock()
		e.flows.del(tuple{s.src, s.dst}, f)
	}
	if syn {
		if svc := e.routing.Load().lookupService(s.dst); svc != nil {
			e.newFlow(q, p, &s, svc)
			return
		}
	}
	// A packet of a flow already handed over whose pending entry is not
	// deleted yet, or a backend's answer to nothing falg sent: the kernel
	// knows better what to do with it.
	e.stats.Unknown.Add(1)
	q.Verdict(p.ID, Accept)
}

// chores is what hand-overs and finished flows leave for the engine to
// do: tuples to delete from the pending sets, held packets to let through
// once those deletes are committed, and flows to drop from the table once
// they have lingered. The queue readers do them after each batch of
// packets (BatchEnd), on their own threads and many flows per nft
// transaction; a ticker does them when no packet comes. (A goroutine woken
// per flow cost a thread wake-up and a context switch per connection.)
type chores struct {
	busy    sync.Mutex // one housekeep at a time: it owns the spares
	mu      sync.Mutex
	dels    []nft.Tuple
	release []held      // to accept once dels are deleted
	gone    []lingering // oldest first: linger is a constant

	spareDels    []nft.Tuple
	spareRelease []held
}

// lingering is a finished flow waiting to leave the table.
type lingering struct {
	at     time.Time
	f      *flow
	ct, bt tuple
}

// housekeepInterval is how often the ticker does the chores when no
// packet comes: the longest a finished flow's tuple stays pending then.
const housekeepInterval = 50 * time.Millisecond

// unpend queues t for deletion from the pending sets.
func (e *Engine) unpend(t tuple) {
	e.chores.mu.Lock()
	e.chores.dels = append(e.chores.dels, nft.Tuple{Src: t.src, Dst: t.dst})
	e.chores.mu.Unlock()
}

// releaseAfterDeletes accepts h once the pending-set deletes queued so
// far are committed: by the reader's BatchEnd that follows the hand-over.
func (e *Engine) releaseAfterDeletes(h held) {
	e.chores.mu.Lock()
	e.chores.release = append(e.chores.release, h)
	e.chores.mu.Unlock()
}

// BatchEnd does the chores after the reader of q handed the engine a batch
// of packets and sent their verdicts. It implements BatchEnder.
func (e *Engine) BatchEnd(q *Queue) { e.housekeep() }

// housekeep deletes the queued tuples from the pending sets in one
// transaction, then accepts the held packets waiting for that, and drops
// the flows that lingered long enough.
func (e *Engine) housekeep() {
	c := &e.chores
	c.busy.Lock()
	defer c.busy.Unlock()
	c.mu.Lock()
	dels, release := c.dels, c.release
	c.dels, c.release = c.spareDels[:0], c.spareRelease[:0]
	var gone []lingering
	if len(c.gone) > 0 {
		now, n := time.Now(), 0
		for n < len(c.gone) && !now.Before(c.gone[n].at) {
			n++
		}
		if n > 0 {
			gone = c.gone[:n:n]
			c.gone = c.gone[n:] // append reallocates when the room behind runs out
		}
	}
	c.mu.Unlock()
	if len(dels) > 0 {
		if err := e.nftDel.Delete(dels...); err != nil {
			e.log.Warn("nfq: delete pending flows", "n", len(dels), "err", err)
		}
	}
	for _, h := range release {
		h.q.Verdict(h.id, Accept)
	}
	c.spareDels, c.spareRelease = dels[:0], release[:0]
	for _, g := range gone {
		e.flows.del(g.ct, g.f)
		if g.bt.src.IsValid() {
			e.flows.del(g.bt, g.f)
		}
	}
	clear(gone) // the array behind c.gone keeps them until append moves it
}
