package nfq

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"falg/nft"
	"falg/protocol"
	"falg/seqnat"
)

// handover completes the flow once the backend answered: it creates the
// conntrack entry that joins the two handshakes, completes the backend's,
// lets the held client packets through and leaves the rest to the kernel.
func (f *flow) handover(synack *segment) {
	bws := synack.opts.wscale
	f.svc.learnShift(bws)
	if f.cOpts.ts && !synack.opts.ts && f.svc.noTS.CompareAndSwap(false, true) {
		f.e.log.Info("nfq: a backend answers without TCP timestamps: the service's new clients get none",
			"service", f.svc.cfg.Name, "backend", f.backend)
	}
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

	// Bytes the backend must get from falg itself: the PROXY header, and
	// what held packets carried past the bytes falg consumed (those
	// packets are dropped; the original direction has no offset, so the
	// remainder goes at the client's own numbers). Later packets pass as
	// they are. Until the backend acknowledges falg's bytes its packets are
	// queued, so that falg can send them again.
	toBackend := f.header
	replayEnd := 0
	for _, h := range f.held {
		if h.off < f.consume {
			replayEnd = max(replayEnd, min(h.off+h.n, len(f.stream)))
		}
	}
	if replayEnd > f.consume {
		toBackend = append(append([]byte(nil), f.header...), f.stream[f.consume:replayEnd]...)
	}
	f.bAck, f.bMSS = synack.seq+1, int(synack.opts.mss)
	f.bTS, f.bTSval = synack.opts.ts && f.cOpts.ts, synack.opts.tsVal
	if f.bMSS == 0 {
		f.bMSS = 536
	}
	if f.bTS {
		f.bMSS -= 12
	}
	f.bMSS = max(f.bMSS, 48) // Linux's floor (tcp_min_snd_mss): a tiny MSS is the backend's bug, not a loop
	if len(toBackend) > 0 {
		f.bConfirm = toBackend
		if !f.addedPend {
			if err := f.e.nftAdd.Add(nft.Tuple{Src: f.backend, Dst: f.bsrc}); err != nil {
				f.e.log.Warn("nfq: backend answers not queued: falg's bytes to it are sent once", "backend", f.backend, "err", err)
				f.bConfirm = nil
			} else {
				f.addedPend = true
			}
		}
	}

	// The entry exists before the backend sees our ACK, so whatever the
	// backend sends next (a banner) already finds it. The ACK carries the
	// first of falg's bytes. With none to send and a held packet to let
	// through, that packet completes the backend's handshake itself (a
	// segment with data and the right ACK does, in SYN-RECV): one packet
	// less for falg to send and the backend to take.
	passes := false
	for _, h := range f.held {
		passes = passes || h.off >= f.consume
	}
	if len(toBackend) > 0 || !passes {
		f.sendToBackend(toBackend)
	}
	held := f.held
	f.held = nil
	f.outcome("spliced", nil)
	if len(reply) > 0 {
		// The client's tuple stays pending until it acknowledges the
		// reply, so that falg sees whether to send it again.
		f.confirm = append([]byte(nil), reply...)
		f.confirmSeq = f.rISN + 1 + f.sentClient
		f.sendReply()
	}
	f.release()
	if f.confirm != nil || f.bConfirm != nil {
		f.arm(replyBackoff[0], f.resend)
		f.resends = 1
	} else {
		f.retire()
	}
	// Held packets that pass go out after the pending-set deletes queued
	// so far, the client tuple's among them (housekeep, at the end of this
	// batch): the backend answers nothing before it has them, so neither
	// its answer nor the client's ACK of it meets the client tuple still in
	// the set, whose pure ACKs the kernel drops for quiet services.
	for _, h := range held {
		if h.off >= f.consume {
			f.e.releaseAfterDeletes(h)
		} else {
			h.q.Verdict(h.id, Drop)
		}
	}
}

// sendToBackend sends b, falg's own bytes for the backend, from the start
// of the backend's stream, in segments of the backend's MSS; with no bytes,
// the bare ACK of the backend's SYN-ACK.
func (f *flow) sendToBackend(b []byte) {
	for off := 0; ; off += f.bMSS {
		end := min(off+f.bMSS, len(b))
		flags := uint8(flagACK)
		if end > off {
			flags |= flagPSH
		}
		f.send(&out{src: f.bsrc, dst: f.backend, seq: f.bISN + 1 + uint32(off), ack: f.bAck, flags: flags,
			window: f.cWin, opts: f.backendOpts(), payload: b[off:end]})
		if end >= len(b) {
			return
		}
	}
}

// outcome writes the flow's one decision line and tells the observer.
// Every flow ends in exactly one outcome: spliced, rejected, malformed,
// no-data or failed.
func (f *flow) outcome(outcome string, err error) {
	setup := time.Since(f.start)
	if o := f.e.observer; o != nil {
		o.Outcome(f.svc.cfg.Name, string(f.svc.cfg.Protocol), f.route, outcome, setup)
	}
	if !f.e.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
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
}
