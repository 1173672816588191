package nfq

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"falg/config"
	"falg/protocol"
	"falg/route"
)

type state uint8

const (
	collecting state = iota // SYN-ACK sent; reading the client's first bytes
	connecting              // SYN sent to a backend
	spliced                 // handed to the kernel: accept what still comes
	closed                  // failed: drop what still comes
)

// maxHeld bounds the client packets a flow holds until hand-over; more are
// dropped and the client sends them again to the backend.
const maxHeld = 64

// linger is how long a finished flow stays in the table, so that packets
// queued before its pending entry was deleted still find it.
const linger = 3 * time.Second

// synRetry is the backend SYN retransmission interval.
const synRetry = time.Second

// held is a queued client packet whose verdict waits for the hand-over.
type held struct {
	q   *Queue
	id  uint32
	off int // stream offset of its first byte
	n   int // payload length
}

// flow is one connection being set up. Every field is guarded by mu.
type flow struct {
	mu    sync.Mutex
	done  atomic.Bool // state is spliced or closed; readable without mu
	e     *Engine
	svc   *service
	state state
	start time.Time

	client, asked netip.AddrPort // C:cp and V:vp
	// origin and originDst are the real client and the address it asked,
	// from a trusted upstream's PROXY header, else client and asked.
	origin, originDst netip.AddrPort
	expectProxy       bool // a PROXY header is still to be read
	proxyLen          int  // bytes of the upstream's PROXY header
	cISN, rISN        uint32
	cOpts             tcpOptions
	cTSval            uint32 // the client's latest timestamp, if cOpts.ts
	cWin              uint16 // the client's last window field
	wsToClient        int8

	stream     []byte // client bytes in order, from cISN+1
	ooo        []oooSeg
	held       []held
	parser     protocol.Parser
	name       string
	alpn       string
	decided    bool
	consume    int
	sentClient uint32 // bytes falg sent the client before the final reply
	// confirm is the final reply (CONNECT 200, SOCKS5 success, "00") the
	// client has not acknowledged yet, at sequence number confirmSeq.
	// Until it does, its packets are still queued and falg resends it.
	confirm    []byte
	confirmSeq uint32
	resends    int
	// bConfirm are the bytes falg sent the backend itself (PROXY header,
	// a replayed remainder) that it has not acknowledged; bAck and bMSS
	// are what falg's segments to it carry.
	bConfirm []byte
	bAck     uint32
	bMSS     int    // payload per segment: the backend's MSS less the timestamps option
	bTS      bool   // timestamps in use toward the backend
	bTSval   uint32 // the backend's timestamp of its SYN-ACK
	// interim is a negotiation reply (SOCKS5) sent before the decision
	// that the client has not acknowledged, at interimSeq.
	interim                []byte
	interimSeq, interimAck uint32
	firstDataBy            time.Time // the first_data deadline
	header                 []byte    // PROXY header falg sends the backend

	tries     []config.Backend
	try       int
	route     int            // index of the matching route, or route.Default
	lastErr   error          // why the last backend attempt failed
	pattern   string         // the pattern that matched
	backend   netip.AddrPort // S:sp
	bsrc      netip.AddrPort // C:cp, or R:rp with SNAT
	reserve   *portReservation
	bISN      uint32 // falg's SYN toward the backend
	bTuple    tuple  // backend -> bsrc
	addedPend bool   // bTuple was added to the pending set by falg
	synSent   time.Time

	timer *time.Timer
	gen   uint32
}

type oooSeg struct {
	off  int
	data []byte
}

func randUint32() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

// newFlow answers a client's SYN with falg's own SYN-ACK.
func (e *Engine) newFlow(q *Queue, p *Packet, s *segment, svc *service) {
	defer q.Verdict(p.ID, Drop)
	if why := svc.admit(s.src.Addr()); why != "" {
		e.stats.Limited.Add(1)
		e.log.Debug("nfq: SYN refused", "client", s.src, "service", svc.cfg.Name, "limit", why)
		if e.observer != nil {
			e.observer.Outcome(svc.cfg.Name, string(svc.cfg.Protocol), route.Default, "limited", 0)
		}
		e.send(&out{src: s.dst, dst: s.src, ack: s.seq + 1, flags: flagRST | flagACK, opts: tcpOptions{wscale: -1}})
		return
	}
	if e.stats.Pending.Add(1) > e.max {
		e.stats.Pending.Add(-1)
		svc.pending.Add(-1)
		e.stats.PendingFull.Add(1)
		e.log.Debug("nfq: too many flows in setup, SYN dropped", "client", s.src)
		return
	}
	parser, err := svc.parser()
	if err != nil {
		e.stats.Pending.Add(-1)
		svc.pending.Add(-1)
		e.log.Error("nfq: parser", "service", svc.cfg.Name, "err", err)
		return
	}
	f := &flow{
		e:           e,
		svc:         svc,
		start:       time.Now(),
		client:      s.src,
		asked:       s.dst,
		route:       route.Default,
		origin:      s.src,
		originDst:   s.dst,
		expectProxy: svc.trusts(s.src.Addr()) || svc.cfg.Protocol == config.Proxy,
		cISN:        s.seq,
		rISN:        randUint32(),
		cOpts:       s.opts,
		cTSval:      s.opts.tsVal,
		cWin:        s.window,
		parser:      parser,
	}
	if !e.flows.claim(tuple{s.src, s.dst}, f) {
		// Another queue made this flow a moment ago.
		e.stats.Pending.Add(-1)
		svc.pending.Add(-1)
		svc.release(parser)
		return
	}
	e.stats.Flows.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wsToClient = -1
	if s.opts.wscale >= 0 {
		f.wsToClient = int8(svc.shift.Load())
	}
	if svc.noTS.Load() {
		f.cOpts.ts = false // neither side gets timestamps
	}
	f.sendSynAck()
	f.firstDataBy = f.start.Add(svc.cfg.Timeouts.FirstData)
	f.arm(svc.cfg.Timeouts.FirstData, f.collectTimer)
}

// collectTimer runs while falg reads the client's first bytes: it resends
// a negotiation reply the client has not acknowledged (SOCKS5), and ends
// the flow at the first_data deadline.
func (f *flow) collectTimer() {
	left := time.Until(f.firstDataBy)
	if left <= 0 {
		f.silent()
		return
	}
	if f.interim == nil {
		f.arm(left, f.collectTimer)
		return
	}
	f.send(&out{src: f.asked, dst: f.client, seq: f.interimSeq, ack: f.interimAck,
		flags: flagACK | flagPSH, window: f.clientWindow(), opts: f.clientOpts(), payload: f.interim})
	f.arm(min(replyBackoff[min(f.resends, len(replyBackoff)-1)], left), f.collectTimer)
	f.resends++
}

func (f *flow) sendSynAck() {
	mss := uint16(1460)
	if f.client.Addr().Is6() {
		mss = 1440
	}
	if f.cOpts.mss != 0 {
		mss = min(mss, f.cOpts.mss)
	}
	// A SYN's window is never scaled. Offering what the parser can use
	// bounds what the client sends before the hand-over, and so the
	// packets each flow holds in the kernel's queue; from the hand-over
	// on, the backend's own window governs.
	f.send(&out{
		src: f.asked, dst: f.client, seq: f.rISN, ack: f.cISN + 1,
		flags: flagSYN | flagACK, window: protocol.MaxFirstBytes,
		opts: tcpOptions{mss: mss, wscale: f.wsToClient, sackPerm: f.cOpts.sackPerm,
			ts: f.cOpts.ts, tsEcr: f.cTSval},
	})
}

// clientOpts are the options of falg's segments to the client after the
// SYN-ACK. With timestamps, falg's TSval is 0, in the SYN-ACK too: the
// client then holds 0 as its most recent timestamp, which RFC 7323
// receivers (Linux, the BSDs) take as none at all, so the backend's first
// segment sets it, whatever the backend's clock reads. Any other value
// could be ahead of the backend's clock, and the client would drop the
// backend's segments as old (PAWS). A reply falg resends after the
// hand-over still passes: the backend's bytes follow it in the client's
// stream, and only a segment in order sets the most recent timestamp.
// The echo is the client's latest timestamp, for its RTT estimate.
func (f *flow) clientOpts() tcpOptions {
	return tcpOptions{wscale: -1, ts: f.cOpts.ts, tsEcr: f.cTSval}
}

// backendOpts are the options of falg's segments to the backend after its
// SYN: the timestamp of the SYN again (see sendSyn), and the echo of the
// backend's. Resent, they still pass: the client's later segments follow
// falg's bytes in the backend's stream, and the backend takes a most recent
// timestamp only from a segment in order.
func (f *flow) backendOpts() tcpOptions {
	return tcpOptions{wscale: -1, ts: f.bTS, tsVal: f.cOpts.tsVal, tsEcr: f.bTSval}
}

// clientWindow is the window field falg sends the client after the SYN-ACK:
// MaxFirstBytes, in the client's view of falg's window scale.
func (f *flow) clientWindow() uint16 {
	if f.wsToClient > 0 {
		return uint16(protocol.MaxFirstBytes >> f.wsToClient)
	}
	return protocol.MaxFirstBytes
}

func (f *flow) send(o *out) { f.e.send(o) }

func (e *Engine) send(o *out) {
	if err := e.inj.sendTCP(o); err != nil {
		e.log.Warn("nfq: send", "err", err)
	}
}

// admit counts a new flow against the service's limits; it returns why the
// flow is refused, or "" (then the flow holds a pending slot).
func (s *service) admit(client netip.Addr) string {
	if s.limiter != nil && !s.limiter.allow(client, time.Now()) {
		return "client_rate"
	}
	if n := s.pending.Add(1); s.cfg.Limits.MaxPending > 0 && n > int64(s.cfg.Limits.MaxPending) {
		s.pending.Add(-1)
		return "max_pending"
	}
	return ""
}

// arm (re)starts the flow's timer; a timer that fired for an older arm
// finds gen changed and does nothing.
func (f *flow) arm(d time.Duration, fn func()) {
	f.gen++
	gen := f.gen
	if f.timer != nil {
		f.timer.Stop()
	}
	f.timer = time.AfterFunc(d, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.gen == gen && f.state != closed {
			fn()
		}
	})
}

func (f *flow) disarm() {
	f.gen++
	if f.timer != nil {
		f.timer.Stop()
	}
}

// over reports whether falg is done with the flow.
func (f *flow) over() bool { return f.state == spliced || f.state == closed }

// packet handles a queued packet of the flow, from either side.
func (f *flow) packet(q *Queue, p *Packet, s *segment) {
	switch f.state {
	case spliced:
		f.e.stats.Late.Add(1)
		q.Verdict(p.ID, Accept)
		if s.flags&flagACK == 0 || (f.confirm == nil && f.bConfirm == nil) {
			return
		}
		switch {
		case s.src == f.client && f.confirm != nil && !seqLess(s.ack, f.confirmSeq+uint32(len(f.confirm))):
			f.confirm = nil
		case s.src == f.backend && f.bConfirm != nil && !seqLess(s.ack, f.bISN+1+uint32(len(f.bConfirm))):
			f.bConfirm = nil
		}
		if f.confirm == nil && f.bConfirm == nil {
			f.disarm()
			f.retire()
		}
		return
	case closed:
		q.Verdict(p.ID, Drop)
		return
	}
	if s.src == f.client {
		f.clientPacket(q, p, s)
		return
	}
	f.backendPacket(q, p, s)
}

func (f *flow) clientPacket(q *Queue, p *Packet, s *segment) {
	if s.opts.ts && !seqLess(s.opts.tsVal, f.cTSval) {
		f.cTSval = s.opts.tsVal
	}
	if s.flags&flagSYN == 0 {
		f.cWin = s.window // scaled by the client's shift, as the backend will read it
		if f.interim != nil && s.flags&flagACK != 0 && !seqLess(s.ack, f.interimSeq+uint32(len(f.interim))) {
			f.interim = nil
		}
	}
	switch {
	case s.flags&flagRST != 0:
		q.Verdict(p.ID, Drop)
		f.e.log.Debug("nfq: client reset during setup", "client", f.client)
		f.abort()
		return
	case s.flags&flagSYN != 0:
		// Our SYN-ACK was lost: send it again.
		q.Verdict(p.ID, Drop)
		if s.seq == f.cISN && f.state == collecting {
			f.sendSynAck()
		}
		return
	case len(s.payload) == 0:
		// Pure ACKs (and the handshake's last one) stop here.
		q.Verdict(p.ID, Drop)
		if f.state == collecting && f.svc.cfg.Protocol == config.None && !f.expectProxy && s.flags&flagFIN == 0 {
			f.feed()
		}
		if s.flags&flagFIN != 0 {
			f.e.log.Debug("nfq: client closed before routing", "client", f.client)
			f.reset()
		}
		return
	}
	off := int(s.seq - (f.cISN + 1))
	if off < 0 || off > protocol.MaxFirstBytes*4 {
		q.Verdict(p.ID, Drop) // before the stream or absurdly far ahead
		return
	}
	if len(f.held) >= maxHeld {
		q.Verdict(p.ID, Drop)
		return
	}
	f.held = append(f.held, held{q: q, id: p.ID, off: off, n: len(s.payload)})
	grew := f.take(off, s.payload)
	if grew && f.state == collecting {
		f.feed()
	}
}

// take adds bytes at stream offset off, and any out-of-order bytes they
// make contiguous. It reports whether the contiguous stream grew.
func (f *flow) take(off int, b []byte) bool {
	limit := protocol.MaxFirstBytes
	if off > len(f.stream) {
		if off < limit && len(f.ooo) < 16 {
			end := min(off+len(b), limit)
			f.ooo = append(f.ooo, oooSeg{off, append([]byte(nil), b[:end-off]...)})
		}
		return false
	}
	grew := false
	add := func(off int, b []byte) {
		if end := off + len(b); end > len(f.stream) && len(f.stream) < limit {
			b = b[len(f.stream)-off:]
			b = b[:min(len(b), limit-len(f.stream))]
			f.stream = append(f.stream, b...)
			grew = true
		}
	}
	add(off, b)
	for progress := true; progress; {
		progress = false
		for i := 0; i < len(f.ooo); i++ {
			if o := f.ooo[i]; o.off <= len(f.stream) {
				add(o.off, o.data)
				f.ooo = append(f.ooo[:i], f.ooo[i+1:]...)
				progress = true
				i--
			}
		}
	}
	return grew
}

// feed runs the parser over the stream and acts on what it decides.
func (f *flow) feed() {
	if f.expectProxy {
		h, n, v, err := protocol.ParseProxyHeader(f.stream)
		switch v {
		case protocol.NeedMore:
			return
		case protocol.Malformed:
			f.e.stats.Malformed.Add(1)
			f.outcome("malformed", err)
			f.reset()
			return
		}
		f.expectProxy, f.proxyLen = false, n
		if !h.Local {
			f.origin, f.originDst = h.Src, h.Dst
		}
		if f.svc.cfg.Protocol == config.Proxy {
			// A proxy service routes by the destination the header names.
			if h.Local || (len(f.svc.cfg.AcceptProxy) > 0 && !f.svc.trusts(f.client.Addr())) {
				f.e.stats.Rejected.Add(1)
				f.outcome("rejected", errors.New("PROXY header not allowed here"))
				f.reset()
				return
			}
			f.name, f.consume = h.Dst.String(), n
			f.decide()
			return
		}
	}
	d := f.parser.Feed(f.stream[f.proxyLen:])
	switch d.Verdict {
	case protocol.NeedMore:
		if len(d.Reply) > 0 {
			f.replyNow(d.Reply, uint32(len(f.stream)))
		}
		if len(f.stream) >= protocol.MaxFirstBytes {
			f.e.stats.Malformed.Add(1)
			f.outcome("malformed", errors.New("no decision within the first bytes limit"))
			f.fail(protocol.BadRequest, "first bytes limit")
		}
	case protocol.Malformed:
		f.e.stats.Malformed.Add(1)
		f.outcome("malformed", d.Err)
		if len(d.Reply) > 0 {
			f.replyNow(d.Reply, uint32(len(f.stream)))
			f.finish()
			return
		}
		if f.svc.cfg.Default != nil && !f.svc.cfg.Protocol.NamesDestination() {
			// What cannot be parsed goes where unmatched names go; the
			// backend sees the bytes as the client sent them.
			f.name, f.consume = "", f.proxyLen
			f.decide()
			return
		}
		f.fail(protocol.BadRequest, "malformed")
	case protocol.Decided:
		f.name, f.alpn, f.consume = d.Name, d.ALPN, f.proxyLen+d.Consume
		f.decide()
	}
}

// replyNow sends the client bytes falg answers before the route is known,
// acknowledging the first acked bytes of its stream, which falg consumes.
func (f *flow) replyNow(b []byte, acked uint32) {
	seq, ack := f.rISN+1+f.sentClient, f.cISN+1+acked
	f.send(&out{src: f.asked, dst: f.client, seq: seq, ack: ack,
		flags: flagACK | flagPSH, window: f.clientWindow(), opts: f.clientOpts(), payload: b})
	f.sentClient += uint32(len(b))
	if f.state == collecting && !f.decided {
		// Until the client acknowledges it, collectTimer resends it.
		f.interim, f.interimSeq, f.interimAck = append(f.interim[:0], b...), seq, ack
		f.resends = 0
		f.arm(min(replyBackoff[0], time.Until(f.firstDataBy)), f.collectTimer)
	}
}

// resend sends again, after the hand-over, what falg sent itself and its
// peer has not acknowledged: the final reply to the client, its own bytes
// to the backend. It backs off; after the last try the flow is left to the
// kernel as it is.
func (f *flow) resend() {
	if f.confirm == nil && f.bConfirm == nil {
		return
	}
	if f.resends == len(replyBackoff) {
		f.e.log.Warn("bytes falg sent were never acknowledged", "client", f.client, "service", f.svc.cfg.Name,
			"client_unacked", len(f.confirm), "backend_unacked", len(f.bConfirm))
		f.confirm, f.bConfirm = nil, nil
		f.retire()
		return
	}
	if f.confirm != nil {
		f.sendReply()
	}
	if f.bConfirm != nil {
		f.sendToBackend(f.bConfirm)
	}
	f.arm(replyBackoff[f.resends], f.resend)
	f.resends++
}

// replyBackoff are the waits before each resend of an unacknowledged reply.
var replyBackoff = []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
	1600 * time.Millisecond, 3200 * time.Millisecond}

func (f *flow) sendReply() {
	f.send(&out{src: f.asked, dst: f.client, seq: f.confirmSeq, ack: f.cISN + 1 + uint32(f.consume),
		flags: flagACK | flagPSH, window: f.clientWindow(), opts: f.clientOpts(), payload: f.confirm})
}

// silent ends a flow whose client sent nothing routable in time.
func (f *flow) silent() {
	f.e.stats.Silent.Add(1)
	f.outcome("no-data", nil)
	f.fail(protocol.Timeout, "first data timeout")
}

// fail ends the flow: the client gets the protocol's error reply and a FIN,
// or a RST where the protocol has no reply.
func (f *flow) fail(o protocol.Outcome, why string) {
	if f.state == spliced || f.state == closed {
		return
	}
	if f.parser != nil && (f.decided || o == protocol.BadRequest) {
		if reply := f.parser.Reply(o); len(reply) > 0 {
			f.replyNow(reply, uint32(len(f.stream)))
			f.finish()
			return
		}
	}
	f.e.log.Debug("nfq: reset client", "client", f.client, "why", why)
	f.reset()
}

// reset sends the client a RST and ends the flow. The flow is freed and
// counted first: whoever sees the client's connection end sees the flow
// gone from the counters too.
func (f *flow) reset() {
	rst := out{src: f.asked, dst: f.client, seq: f.rISN + 1 + f.sentClient, ack: f.cISN + 1 + uint32(len(f.stream)),
		flags: flagRST | flagACK, opts: tcpOptions{wscale: -1}}
	f.abort()
	f.send(&rst)
}

// finish sends the client a FIN after a final error reply, and ends the
// flow, freed first as in reset.
func (f *flow) finish() {
	fin := out{src: f.asked, dst: f.client, seq: f.rISN + 1 + f.sentClient, ack: f.cISN + 1 + uint32(len(f.stream)),
		flags: flagFIN | flagACK, window: f.clientWindow(), opts: f.clientOpts()}
	f.abort()
	f.send(&fin)
}

// abort drops everything the flow holds and forgets it.
func (f *flow) abort() {
	if f.state == connecting {
		f.resetBackend()
	}
	for _, h := range f.held {
		h.q.Verdict(h.id, Drop)
	}
	f.held = nil
	f.state = closed
	f.done.Store(true)
	f.release()
	f.retire()
}

// release frees the flow's setup resources: its parser, buffers and
// pending-flow slots.
func (f *flow) release() {
	f.disarm()
	f.e.stats.Pending.Add(-1)
	f.svc.pending.Add(-1)
	f.svc.release(f.parser)
	f.parser = nil
	f.stream, f.ooo = nil, nil
}

// retire takes the flow's tuples out of the pending sets; the flow lingers
// in the table so that packets queued before the delete find it, then
// leaves it.
func (f *flow) retire() {
	e, ct, bt := f.e, tuple{f.client, f.asked}, f.bTuple
	e.unpend(ct)
	if f.addedPend {
		e.unpend(bt)
	}
	e.chores.mu.Lock()
	e.chores.gone = append(e.chores.gone, lingering{at: time.Now().Add(linger), f: f, ct: ct, bt: bt})
	e.chores.mu.Unlock()
}
