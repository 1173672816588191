package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"falg/config"
	"falg/route"
)

// Defaults for zero Options fields.
const (
	DefaultIdle         = 10 * time.Minute
	DefaultUDPIdle      = 60 * time.Second
	DefaultDrain        = 5 * time.Second
	DefaultTable        = 4010 // routing table of marked (TPROXY) packets
	DefaultRulePriority = 4010 // priority of the ip rule that selects it
	DefaultMaxSessions  = 4096 // UDP client sockets per service
)

// Options tune a Server.
type Options struct {
	// Log receives the relay's log; nil discards it.
	Log *slog.Logger
	// Stats, if set, receives the counters; else the Server keeps its own.
	Stats *Stats
	// Interceptor, if set, sees the bytes of every TCP flow.
	Interceptor Interceptor
	// Mark is the packet mark bit the TPROXY rules set and the ip rule
	// selects. Required when a relay service listens on "*:port" or uses
	// source: client; it must not be used by anything else.
	Mark uint32
	// Table and RulePriority are the routing table for marked packets and
	// the priority of the ip rule that selects it (default DefaultTable,
	// DefaultRulePriority).
	Table, RulePriority uint32
	// Idle resets a TCP flow that moved no byte either way for this long
	// (default DefaultIdle).
	Idle time.Duration
	// UDPIdle closes a UDP client socket without traffic for this long
	// (default DefaultUDPIdle).
	UDPIdle time.Duration
	// Drain is how long Shutdown waits for flows to end by themselves
	// when its context has no earlier deadline (default DefaultDrain).
	Drain time.Duration
	// MaxSessions caps the UDP client sockets of one service (default
	// DefaultMaxSessions); datagrams past it are dropped.
	MaxSessions int
}

// Server relays the services of a configuration whose dataplane is relay.
type Server struct {
	opts  Options
	log   *slog.Logger
	stats *Stats
	tcp   []*tcpService
	udp   []*udpService
	// needPolicy: some service is transparent or dials from the client's
	// address, so the nftables table and the ip rules are needed.
	needPolicy bool
	policy     *policy

	mu     sync.Mutex
	conns  map[io.Closer]struct{} // open flow sockets, closed at the end of a drain
	killed bool                   // the drain deadline passed: new sockets are refused
	flows  sync.WaitGroup         // flow handlers and UDP sessions
	loops  sync.WaitGroup         // accept and read loops
}

// Relayed returns the services of c that the relay data plane serves.
func Relayed(c *config.Config) []*config.Service {
	var out []*config.Service
	for i := range c.Services {
		if c.Services[i].Dataplane == "relay" {
			out = append(out, &c.Services[i])
		}
	}
	return out
}

// New checks the relay services of c and builds their route tables. It
// binds and installs nothing: Start does.
func New(c *config.Config, o Options) (*Server, error) {
	if o.Idle <= 0 {
		o.Idle = DefaultIdle
	}
	if o.UDPIdle <= 0 {
		o.UDPIdle = DefaultUDPIdle
	}
	if o.Drain <= 0 {
		o.Drain = DefaultDrain
	}
	if o.Table == 0 {
		o.Table = DefaultTable
	}
	if o.RulePriority == 0 {
		o.RulePriority = DefaultRulePriority
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	s := &Server{opts: o, log: o.Log, stats: o.Stats, conns: map[io.Closer]struct{}{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.stats == nil {
		s.stats = &Stats{}
	}
	var errs []error
	for i := range c.Services {
		svc := &c.Services[i]
		if svc.Dataplane != "relay" {
			continue
		}
		at := func(field, msg string) {
			errs = append(errs, fmt.Errorf("services[%d].%s: %s", i, field, msg))
		}
		if svc.Protocol == config.Proxy {
			at("protocol", "proxy is not implemented by the relay yet")
			continue
		}
		if len(svc.AcceptProxy) > 0 {
			at("accept_proxy", "accepting PROXY headers is not implemented by the relay yet")
			continue
		}
		table, err := route.New(svc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		transparent := false
		for _, l := range svc.Listen {
			transparent = transparent || l.Any()
		}
		if svc.Source == config.SourceClient || transparent {
			s.needPolicy = true
		}
		if svc.Protocol.UDP() {
			if transparent {
				at("listen", "the relay does not take UDP for any destination (*:port) yet")
				continue
			}
			s.udp = append(s.udp, &udpService{srv: s, cfg: svc, table: table})
			continue
		}
		ts, err := newTCPService(s, svc, table)
		if err != nil {
			at("protocol", err.Error())
			continue
		}
		s.tcp = append(s.tcp, ts)
	}
	if s.needPolicy && o.Mark == 0 {
		errs = append(errs, errors.New("relay: transparent listens and source: client need Options.Mark"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("relay: %w", errors.Join(errs...))
	}
	return s, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() *Stats { return s.stats }

// Empty reports whether the configuration has no relay service.
func (s *Server) Empty() bool { return len(s.tcp) == 0 && len(s.udp) == 0 }

// Start installs the TPROXY table and ip rules when needed, binds every
// listen and starts serving. On error it undoes what it did.
func (s *Server) Start() (err error) {
	if s.Empty() {
		return nil
	}
	defer func() {
		if err != nil {
			s.stopListening()
			s.loops.Wait()
			if s.policy != nil {
				if perr := s.policy.remove(); perr != nil {
					err = errors.Join(err, perr)
				}
				s.policy = nil
			}
		}
	}()
	if s.needPolicy {
		p := &policy{mark: s.opts.Mark, table: s.opts.Table, prio: s.opts.RulePriority}
		for _, t := range s.tcp {
			for _, l := range t.cfg.Listen {
				if l.Any() {
					p.tproxyPorts = append(p.tproxyPorts, l.Port)
				}
			}
		}
		if err := p.install(); err != nil {
			return err
		}
		s.policy = p
		s.log.Info("relay: policy installed", "table", "inet "+NFTTable, "mark", fmt.Sprintf("%#x", p.mark),
			"route_table", p.table, "tproxy_ports", p.tproxyPorts)
	}
	for _, t := range s.tcp {
		if err := t.listen(); err != nil {
			return err
		}
	}
	for _, u := range s.udp {
		if err := u.listen(); err != nil {
			return err
		}
	}
	for _, t := range s.tcp {
		t.start()
	}
	for _, u := range s.udp {
		u.start()
	}
	return nil
}

// stopListening closes every listener and UDP socket so the loops end.
func (s *Server) stopListening() {
	for _, t := range s.tcp {
		t.close()
	}
	for _, u := range s.udp {
		u.close()
	}
}

// Shutdown stops accepting, waits for open flows to end until ctx is done
// or Options.Drain has passed, closes those still open, and removes the
// TPROXY table and ip rules.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopListening()
	s.loops.Wait()
	ctx, cancel := context.WithTimeout(ctx, s.opts.Drain)
	defer cancel()
	done := make(chan struct{})
	go func() {
		s.flows.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		s.killed = true
		n := len(s.conns)
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.log.Info("relay: drain deadline: closing open sockets", "sockets", n)
		<-done
	}
	if s.policy != nil {
		if err := s.policy.remove(); err != nil {
			return err
		}
		s.log.Info("relay: policy removed", "table", "inet "+NFTTable)
		s.policy = nil
	}
	return nil
}

// track registers a flow socket to close at the end of a drain; it
// reports false (and the caller must close c) when the server is closing.
func (s *Server) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.killed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c io.Closer) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// addrPort returns the address of a TCP or UDP net.Addr, IPv4 unmapped.
func addrPort(a net.Addr) (ap netip.AddrPort) {
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// MarkBit returns the mark bit the relay uses in falg's configuration: the
// third-lowest bit of c.Mark (the two lowest are the splice engine's inject
// and flow marks), or 0 when c.Mark has fewer than three bits.
func MarkBit(c *config.Config) uint32 { return c.RelayMark() }
