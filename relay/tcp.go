package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"falg/config"
	"falg/protocol"
	"falg/route"
)

// tcpService serves the TCP listens of one relay service.
type tcpService struct {
	srv     *Server
	cfg     *config.Service
	table   *route.Table
	parsers sync.Pool // protocol.Parser
	lns     []*net.TCPListener
}

// firstBufs holds the buffers the first bytes are read into.
var firstBufs = sync.Pool{New: func() any { return new([protocol.MaxFirstBytes]byte) }}

func newTCPService(s *Server, svc *config.Service, table *route.Table) (*tcpService, error) {
	if _, err := protocol.New(string(svc.Protocol), protocol.Options{}); err != nil {
		return nil, err
	}
	t := &tcpService{srv: s, cfg: svc, table: table}
	t.parsers.New = func() any {
		p, _ := protocol.New(string(svc.Protocol), protocol.Options{})
		return p
	}
	return t, nil
}

// listen binds every listen of the service: an address binds it, "*:port"
// binds transparent sockets on the port for IPv4 and IPv6.
func (t *tcpService) listen() error {
	for _, l := range t.cfg.Listen {
		var binds [][2]string
		if l.Any() {
			binds = [][2]string{{"tcp4", fmt.Sprintf("0.0.0.0:%d", l.Port)}, {"tcp6", fmt.Sprintf("[::]:%d", l.Port)}}
		} else {
			binds = [][2]string{{network("tcp", l.Addr), l.String()}}
		}
		for _, b := range binds {
			ln, err := listenTCP(b[0], b[1], l.Any())
			if err != nil {
				return fmt.Errorf("relay: service %s: listen %s: %w", t.cfg.Name, l, err)
			}
			t.lns = append(t.lns, ln)
		}
	}
	return nil
}

func (t *tcpService) start() {
	for _, ln := range t.lns {
		t.srv.loops.Add(1)
		go t.accept(ln)
	}
	t.srv.log.Info("relay: serving", "service", t.cfg.Name, "protocol", t.cfg.Protocol, "listen", t.cfg.Listen)
}

func (t *tcpService) close() {
	for _, ln := range t.lns {
		ln.Close()
	}
}

func (t *tcpService) accept(ln *net.TCPListener) {
	defer t.srv.loops.Done()
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.srv.log.Warn("relay: accept", "service", t.cfg.Name, "err", err)
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		t.srv.stats.Accepted.Add(1)
		if !t.srv.track(c) {
			c.Close()
			continue
		}
		t.srv.flows.Add(1)
		go t.handle(c)
	}
}

// handle serves one client connection from its first byte to its end.
func (t *tcpService) handle(c *net.TCPConn) {
	s := t.srv
	defer s.flows.Done()
	defer func() {
		s.untrack(c)
		c.Close()
	}()
	f := &Flow{Service: t.cfg.Name, Client: addrPort(c.RemoteAddr()), Asked: addrPort(c.LocalAddr())}
	p := t.parsers.Get().(protocol.Parser)
	p.Reset()
	defer t.parsers.Put(p)
	buf := firstBufs.Get().(*[protocol.MaxFirstBytes]byte)
	defer firstBufs.Put(buf)

	n, d, ok := t.first(c, p, buf[:])
	if !ok {
		return
	}
	log := s.log.With("service", t.cfg.Name, "client", f.Client, "asked", f.Asked)
	if d.Verdict == protocol.Malformed {
		s.stats.Malformed.Add(1)
		log.Info("relay: malformed first bytes", "err", d.Err)
		if d.Reply != nil {
			c.Write(d.Reply)
			return
		}
		if t.cfg.Protocol.NamesDestination() || t.cfg.Default == nil {
			t.refuse(c, p, protocol.BadRequest)
			return
		}
		d = protocol.Decision{Verdict: protocol.Decided} // default route, nothing consumed
	}
	f.Name = d.Name
	m, routed := t.table.Lookup(d.Name)
	if !routed {
		s.stats.Rejected.Add(1)
		log.Info("relay: no route", "name", d.Name)
		t.refuse(c, p, protocol.NotAllowed)
		return
	}
	b, err := t.connect(f, m, d.Name)
	if err != nil {
		s.stats.Failed.Add(1)
		log.Info("relay: no backend", "name", d.Name, "err", err)
		t.refuse(c, p, outcome(err))
		return
	}
	if !s.track(b) {
		b.Close()
		return
	}
	defer func() {
		s.untrack(b)
		b.Close()
	}()
	s.stats.Relayed.Add(1)
	var hook Hook
	if s.opts.Interceptor != nil {
		hook = s.opts.Interceptor.Open(f)
	}
	// PROXY header and the first bytes the backend must see, in one write.
	var out []byte
	switch t.cfg.ProxyProtocol {
	case "v1":
		out = protocol.AppendProxyV1(out, f.Client, f.Asked)
	case "v2":
		out = protocol.AppendProxyV2(out, f.Client, f.Asked)
	}
	if first := buf[d.Consume:n]; len(first) > 0 {
		if hook != nil {
			first, err = hook.Chunk(ToBackend, first)
			if err != nil {
				log.Info("relay: interceptor", "err", err)
				resetBoth(c, b)
				return
			}
		}
		out = append(out, first...)
	}
	if len(out) > 0 {
		if _, err := b.Write(out); err != nil {
			resetBoth(c, b)
			return
		}
		s.stats.ToBackend.Add(uint64(len(out)))
	}
	// Counted before the client hears of it, as the flow is from here.
	s.stats.Active.Add(1)
	defer s.stats.Active.Add(-1)
	if hook != nil {
		s.stats.Intercepted.Add(1)
	}
	if reply := p.Reply(protocol.OK); len(reply) > 0 {
		if _, err := c.Write(reply); err != nil {
			resetBoth(c, b)
			return
		}
	}
	c.SetDeadline(time.Time{})
	log.Debug("relay: flow", "name", f.Name, "backend", f.Backend, "spliced", hook == nil)
	t.pipe(c, b, hook)
}

// first reads the client's first bytes until the parser decides, sending
// interim replies. ok is false when the flow is over (EOF, timeout, error:
// the client has been answered).
func (t *tcpService) first(c *net.TCPConn, p protocol.Parser, buf []byte) (n int, d protocol.Decision, ok bool) {
	if t.cfg.Protocol == config.None {
		return 0, p.Feed(nil), true
	}
	c.SetReadDeadline(time.Now().Add(t.cfg.Timeouts.FirstData))
	for {
		m, err := c.Read(buf[n:])
		n += m
		if m > 0 {
			d = p.Feed(buf[:n])
			if len(d.Reply) > 0 && d.Verdict != protocol.Malformed {
				if _, err := c.Write(d.Reply); err != nil {
					return n, d, false
				}
			}
			if d.Verdict != protocol.NeedMore {
				return n, d, true
			}
			if n == len(buf) {
				return n, protocol.Decision{Verdict: protocol.Malformed, Err: protocol.ErrTooLarge}, true
			}
		}
		if err != nil {
			if isTimeout(err) {
				t.srv.stats.Silent.Add(1)
				t.refuse(c, p, protocol.Timeout)
			}
			return n, d, false
		}
	}
}

// refuse answers the client with the protocol's reply for o and a FIN, or
// resets it when the protocol has no reply.
func (t *tcpService) refuse(c *net.TCPConn, p protocol.Parser, o protocol.Outcome) {
	if reply := p.Reply(o); reply != nil {
		c.SetWriteDeadline(time.Now().Add(t.cfg.Timeouts.Connect))
		c.Write(reply)
		c.CloseWrite()
		return
	}
	c.SetLinger(0)
}

// connect tries the matched backends in the route's order and returns the
// first connection made.
func (t *tcpService) connect(f *Flow, m route.Match, name string) (*net.TCPConn, error) {
	tries := t.table.Order(m, f.Client.Addr(), nil)
	var last error = errNoBackend
	for i := 0; i < len(tries); i++ {
		addr := tries[i].Addr
		if tries[i].Requested {
			ap, err := netip.ParseAddrPort(name)
			if err != nil {
				addrs, err := t.resolve(name)
				if err != nil {
					last = err
					continue
				}
				tries = append(tries[:i+1], append(addrs, tries[i+1:]...)...)
				continue
			}
			addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		var from netip.AddrPort
		if t.cfg.Source == config.SourceClient {
			if addr.Addr().Is4() != f.Client.Addr().Is4() {
				continue // the client's address cannot reach the other family
			}
			from = f.Client
		}
		ctx, cancel := context.WithTimeout(context.Background(), t.cfg.Timeouts.Connect)
		b, err := dialTCP(ctx, from, addr, t.cfg.Timeouts.Connect)
		cancel()
		if err == nil {
			f.Backend = addr
			return b, nil
		}
		t.srv.stats.BackendFail.Add(1)
		t.srv.log.Info("relay: backend failed", "service", t.cfg.Name, "client", f.Client, "backend", addr, "err", err)
		last = err
	}
	return nil, last
}

// resolve looks up the host of a requested "host:port".
func (t *tcpService) resolve(name string) ([]config.Backend, error) {
	host, port, err := net.SplitHostPort(name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.Timeouts.Connect)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	pp, err := netip.ParseAddrPort("0.0.0.0:" + port)
	if err != nil {
		return nil, err
	}
	out := make([]config.Backend, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, config.Backend{Addr: netip.AddrPortFrom(a.Unmap(), pp.Port())})
	}
	return out, nil
}

var errNoBackend = errors.New("no usable backend")

// outcome maps a dial error to the protocol outcome the client is told.
func outcome(err error) protocol.Outcome {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return protocol.Refused
	case isTimeout(err), errors.Is(err, context.DeadlineExceeded):
		return protocol.Timeout
	}
	return protocol.Unreachable
}

// resetBoth closes both sockets with a RST.
func resetBoth(a, b *net.TCPConn) {
	a.SetLinger(0)
	b.SetLinger(0)
	a.Close()
	b.Close()
}

var _ io.ReaderFrom = (*net.TCPConn)(nil)
