package nfq

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"falg/protocol"
	"falg/seqnat"
)

// handover completes the flow once the backend answered: it creates the
// conntrack entry that joins the two handshakes, completes the backend's,
// lets the held client packets through and leaves the rest to the kernel.
func (f *flow) handover(synack *segment) {
	bws := synack.opts.wscale
	f.svc.learnShift(bws)
	reply := f.parser.Reply(protocol.OK)
	hs := seqnat.Handshake{
		ClientISN:     f.cISN,
		RouterISN:     f.rISN,
		BackendSYNISN: f.bISN,
		BackendISN:    synack.seq,
		Consumed:      uint32(f.consume),
		SentToBackend: uint32(len(f.header)),
		SentToClient:  f.sentClient + uint32(len(reply)),
	}
	orig, rep := hs.SeqAdj()
	ct := seqnat.Flow{
		Proto:       unix.IPPROTO_TCP,
		Orig:        seqnat.Tuple{Src: f.client, Dst: f.asked},
		NATDst:      f.backend,
		Mark:        f.e.cfg.FlowMark(),
		TCP:         &seqnat.TCPInfo{WScaleOrig: uint8(max(f.cOpts.wscale, 0)), WScaleReply: uint8(max(bws, 0))},
		SeqAdjOrig:  &orig,
		SeqAdjReply: &rep,
	}
	if f.reserve != nil {
		ct.NATSrc = f.bsrc
	}
	err := f.e.ct.Create(ct)
	if errors.Is(err, unix.EEXIST) {
		// A stale entry of an earlier flow with the same tuple.
		f.e.ct.Delete(unix.IPPROTO_TCP, ct.Orig)
		err = f.e.ct.Create(ct)
	}
	if err != nil {
		f.e.stats.HandoverErr.Add(1)
		f.e.log.Error("nfq: hand-over", "client", f.client, "backend", f.backend, "err", err)
		f.resetBackend()
		f.state = collecting // fail sends the client its reply for this outcome
		f.fail(protocol.Unreachable, "conntrack create")
		return
	}
	// The flow is the kernel's from here: count and record it before its
	// first byte can move, so that anyone who sees the flow work sees it
	// counted too.
	f.state = spliced
	f.done.Store(true)
	f.e.stats.Spliced.Add(1)
	f.e.records.add(Record{
		Client: f.client, Asked: f.asked, Backend: f.backend, Source: f.bsrc,
		Service: f.svc.cfg.Name, Protocol: string(f.svc.cfg.Protocol), Name: f.name,
		Start: time.Now(), reserve: f.reserve,
	})
	f.reserve = nil

	// The entry exists before the backend sees our ACK, so whatever the
	// backend sends next (a banner) already finds it. The ACK carries the
	// PROXY header, if there is one.
	flags := uint8(flagACK)
	if len(f.header) > 0 {
		flags |= flagPSH
	}
	f.send(&out{src: f.bsrc, dst: f.backend, seq: f.bISN + 1, ack: synack.seq + 1, flags: flags,
		window: f.cWin, opts: tcpOptions{wscale: -1}, payload: f.header})

	// Client bytes falg consumed must not reach the backend: packets that
	// hold any are dropped and what they carried past the consumed part is
	// sent again by falg, at the same sequence numbers (the original
	// direction has no offset). Later packets pass as they are.
	replayEnd := 0
	for _, h := range f.held {
		if h.off >= f.consume {
			h.q.Verdict(h.id, Accept)
			continue
		}
		h.q.Verdict(h.id, Drop)
		replayEnd = max(replayEnd, min(h.off+h.n, len(f.stream)))
	}
	f.held = nil
	mss := int(synack.opts.mss)
	if mss == 0 {
		mss = 536
	}
	for off := f.consume; off < replayEnd; off += mss {
		end := min(off+mss, replayEnd)
		f.send(&out{src: f.bsrc, dst: f.backend, seq: f.cISN + 1 + uint32(off), ack: synack.seq + 1,
			flags: flagACK | flagPSH, window: f.cWin, opts: tcpOptions{wscale: -1}, payload: f.stream[off:end]})
	}
	f.outcome("spliced", nil)
	if len(reply) > 0 {
		// The client's tuple stays pending until it acknowledges the
		// reply, so that falg sees whether to send it again.
		f.confirm = append([]byte(nil), reply...)
		f.confirmSeq = f.rISN + 1 + f.sentClient
		f.sendReply()
		f.release()
		f.arm(replyBackoff[0], f.resendReply)
		f.resends = 1
		return
	}
	f.release()
	f.retire()
}

// outcome writes the flow's one decision line and tells the observer.
// Every flow ends in exactly one outcome: spliced, rejected, malformed,
// no-data or failed.
func (f *flow) outcome(outcome string, err error) {
	setup := time.Since(f.start)
	attrs := make([]any, 0, 32)
	attrs = append(attrs, "client", f.client, "asked", f.asked, "service", f.svc.cfg.Name,
		"protocol", f.svc.cfg.Protocol, "name", f.name, "outcome", outcome)
	if f.origin != f.client {
		attrs = append(attrs, "origin", f.origin)
	}
	if f.decided && f.route >= 0 {
		attrs = append(attrs, "route", f.route, "pattern", f.pattern)
	} else if f.decided && f.backend.IsValid() {
		attrs = append(attrs, "route", "default")
	}
	if f.backend.IsValid() {
		attrs = append(attrs, "backend", f.backend)
	}
	if f.alpn != "" {
		attrs = append(attrs, "alpn", f.alpn)
	}
	attrs = append(attrs, "setup", setup.Round(time.Microsecond))
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	f.e.log.Info("flow", attrs...)
	if o := f.e.observer; o != nil {
		o.Outcome(f.svc.cfg.Name, string(f.svc.cfg.Protocol), f.route, outcome, setup)
	}
}
