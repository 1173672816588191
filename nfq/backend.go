package nfq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"falg/config"
	"falg/nft"
	"falg/protocol"
	"falg/seqnat"
)

// decide routes the flow by the name its parser found.
func (f *flow) decide() {
	f.decided = true
	f.disarm()
	m, ok := f.svc.routes.Lookup(f.name)
	if !ok {
		f.e.stats.Rejected.Add(1)
		f.outcome("rejected", nil)
		f.fail(protocol.NotAllowed, "no route")
		return
	}
	f.route, f.pattern = m.Route, m.Pattern
	f.tries = f.svc.routes.Order(m, f.origin.Addr(), f.tries[:0])
	f.try = 0
	f.connectNext(protocol.Unreachable)
}

// connectNext tries the route's next backend; when none is left the client
// gets the outcome of the last attempt.
func (f *flow) connectNext(last protocol.Outcome) {
	for f.try < len(f.tries) {
		b := f.tries[f.try]
		f.try++
		addr := b.Addr
		if b.Requested {
			ap, err := netip.ParseAddrPort(f.name)
			if err != nil {
				f.resolve()
				return
			}
			addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		if addr.Addr().Is4() != f.client.Addr().Is4() {
			continue // no NAT between families: the route's other backends serve
		}
		if err := f.connect(addr); err != nil {
			f.backendFailed(addr, err)
			continue
		}
		return
	}
	f.e.stats.Failed.Add(1)
	f.outcome("failed", f.lastErr)
	f.fail(last, "no backend")
}

// resolve looks up the host a client requested by name, off the packet
// path, and goes on with the addresses it finds.
func (f *flow) resolve() {
	host, port, err := net.SplitHostPort(f.name)
	if err != nil {
		f.connectNext(protocol.BadRequest)
		return
	}
	f.disarm()
	gen := f.gen
	timeout := f.svc.cfg.Timeouts.Connect
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.gen != gen || f.state == closed || f.state == spliced {
			return
		}
		if err != nil || len(addrs) == 0 {
			f.e.log.Debug("nfq: resolve", "name", host, "err", err)
			f.connectNext(protocol.Unreachable)
			return
		}
		p, _ := netip.ParseAddrPort("0.0.0.0:" + port)
		// Try the resolved addresses in place of the requested entry.
		rest := append([]config.Backend(nil), f.tries[f.try:]...)
		f.tries = f.tries[:f.try]
		for _, a := range addrs {
			f.tries = append(f.tries, config.Backend{Addr: netip.AddrPortFrom(a.Unmap(), p.Port())})
		}
		f.tries = append(f.tries, rest...)
		f.connectNext(protocol.Unreachable)
	}()
}

// connect sends the backend a SYN that continues the client's sequence
// space: with falg's ISN set to cISN+consume-injected the original
// direction needs no sequence offset.
func (f *flow) connect(backend netip.AddrPort) error {
	f.dropBackend()
	f.backend = backend
	f.bsrc = f.client
	if f.svc.cfg.Source == config.SourceRouter {
		r, err := f.e.reservePort(backend)
		if err != nil {
			return err
		}
		f.reserve = r
		f.bsrc = r.addr
	}
	if err := f.e.clearReplyTuple(backend, f.bsrc, tuple{f.client, f.asked}); err != nil {
		return err
	}
	f.bTuple = tuple{backend, f.bsrc}
	if !f.e.flows.claim(f.bTuple, f) {
		f.bTuple = tuple{}
		return fmt.Errorf("tuple %v > %v is in use", backend, f.bsrc)
	}
	if !f.e.routing.Load().backends[backend] {
		// Not in the static backend set: the SYN-ACK must be queued by
		// the pending set.
		if err := f.e.nftAdd.Add(nft.Tuple{Src: backend, Dst: f.bsrc}); err != nil {
			return err
		}
		f.addedPend = true
	}
	// The backend's stream is the PROXY header, if any, then the client's
	// bytes after those falg consumed, at the client's own numbers.
	f.header = f.svc.proxyHeader(f.origin, f.originDst)
	f.bISN = f.cISN + uint32(f.consume) - uint32(len(f.header))
	f.state = connecting
	f.synSent = time.Now()
	f.sendSyn()
	f.arm(min(synRetry, f.svc.cfg.Timeouts.Connect), f.synTimer)
	return nil
}

// sendSyn sends the backend falg's SYN, with the client's options. Its
// timestamp is the one of the client's SYN, older than any the client sent
// since: the backend takes it as its most recent, so it keeps each held
// segment the hand-over lets through, however old (PAWS drops a segment
// older than the most recent by more than a tick).
func (f *flow) sendSyn() {
	f.send(&out{
		src: f.bsrc, dst: f.backend, seq: f.bISN, flags: flagSYN, window: f.cWin,
		opts: tcpOptions{mss: f.cOpts.mss, wscale: f.cOpts.wscale, sackPerm: f.cOpts.sackPerm,
			ts: f.cOpts.ts, tsVal: f.cOpts.tsVal},
	})
}

// synTimer resends the SYN, or gives up on the backend after the connect
// timeout.
func (f *flow) synTimer() {
	left := f.svc.cfg.Timeouts.Connect - time.Since(f.synSent)
	if left > 0 {
		f.sendSyn()
		f.arm(min(synRetry, left), f.synTimer)
		return
	}
	f.backendFailed(f.backend, errBackendTimeout)
	f.dropBackend()
	f.connectNext(protocol.Timeout)
}

// dropBackend forgets the current backend attempt.
func (f *flow) dropBackend() {
	if f.bTuple.src.IsValid() {
		f.e.flows.del(f.bTuple, f)
		if f.addedPend {
			f.e.unpend(f.bTuple)
			f.addedPend = false
		}
		f.bTuple = tuple{}
	}
	f.reserve.Close()
	f.reserve = nil
}

// resetBackend tells a backend that answered that falg is gone.
func (f *flow) resetBackend() {
	if f.bTuple.src.IsValid() {
		f.send(&out{src: f.bsrc, dst: f.backend, seq: f.bISN + 1, flags: flagRST, opts: tcpOptions{wscale: -1}})
	}
	f.dropBackend()
}

func (f *flow) backendPacket(q *Queue, p *Packet, s *segment) {
	q.Verdict(p.ID, Drop)
	if f.state != connecting || s.src != f.backend {
		return
	}
	switch {
	case s.flags&flagRST != 0:
		f.backendFailed(f.backend, errBackendRefused)
		f.dropBackend()
		f.connectNext(protocol.Refused)
	case s.flags&(flagSYN|flagACK) == flagSYN|flagACK && s.ack == f.bISN+1:
		f.handover(s)
	}
}

var (
	errTupleBusy      = errors.New("an established connection already uses this backend tuple")
	errBackendRefused = errors.New("refused")
	errBackendTimeout = errors.New("no answer within timeouts.connect")
)

// backendFailed counts and logs a backend attempt that did not work.
func (f *flow) backendFailed(backend netip.AddrPort, err error) {
	f.lastErr = fmt.Errorf("backend %s: %w", backend, err)
	f.e.stats.BackendFail.Add(1)
	f.e.log.Info("backend failed", "client", f.client, "service", f.svc.cfg.Name, "backend", backend, "err", err)
	if o := f.e.observer; o != nil {
		o.BackendFailed(f.svc.cfg.Name, backend, err)
	}
}

// clearReplyTuple makes sure no conntrack entry already answers from
// backend to src: the entry falg creates needs that reply tuple, and on a
// clash the kernel would quietly remap the source port of falg's entry, so
// the backend would get the flow's bytes on a connection it never saw. Such
// an entry is the client's own past connection to the backend (source:
// client), or an earlier spliced flow of the same client port (orig). One
// that is over is deleted, and so is an earlier spliced flow on the very
// tuple the client now opens again: the client's new SYN proves it over,
// even when conntrack still calls it established (a backend's RST does not
// move a seqadj entry out of ESTABLISHED: see docs/design.md). Any other
// live entry makes this backend unusable for this flow.
func (e *Engine) clearReplyTuple(backend, src netip.AddrPort, orig tuple) error {
	old, err := e.ct.Get(unix.IPPROTO_TCP, seqnat.Tuple{Src: backend, Dst: src})
	reopened := old.Mark&e.cfg.FlowMark() != 0 && old.Orig == seqnat.Tuple{Src: orig.src, Dst: orig.dst}
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return err
	case old.TCP != nil && old.TCP.State == seqnat.TCPStateEstablished && !reopened:
		return errTupleBusy
	}
	if err := e.ct.Delete(unix.IPPROTO_TCP, old.Orig); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// portReservation holds a router port for a SNAT flow: a bound socket, so
// that no other program or flow takes the port while the flow lives.
type portReservation struct {
	fd   int
	addr netip.AddrPort
}

// Close releases the port. It is safe on nil.
func (r *portReservation) Close() {
	if r != nil && r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}

// reservePort binds a TCP socket to a free port of the router address the
// kernel would use toward backend.
func (e *Engine) reservePort(backend netip.AddrPort) (*portReservation, error) {
	local, err := e.localAddr(backend.Addr())
	if err != nil {
		return nil, err
	}
	family := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: local.As16()}
	if local.Is4() {
		family = unix.AF_INET
		sa = &unix.SockaddrInet4{Addr: local.As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("nfq: reserve port: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nfq: reserve port on %s: %w", local, err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nfq: reserve port: %w", err)
	}
	var port int
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	return &portReservation{fd: fd, addr: netip.AddrPortFrom(local, uint16(port))}, nil
}

// localAddr is the source address the kernel picks toward dst.
func (e *Engine) localAddr(dst netip.Addr) (netip.Addr, error) {
	if v, ok := e.locals.Load(dst); ok {
		return v.(netip.Addr), nil
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("nfq: no route to %s: %w", dst, err)
	}
	defer c.Close()
	local := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	e.locals.Store(dst, local)
	return local, nil
}
