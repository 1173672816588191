package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"falg/config"
	"falg/protocol"
	"falg/route"
)

// udpService relays the datagrams of one udp or dns service. Each
// (client, backend) pair gets its own socket toward the backend, so the
// backend's answers can be told apart and returned to the right client
// from the listen address; a socket expires after Options.UDPIdle.
type udpService struct {
	srv   *Server
	cfg   *config.Service
	table *route.Table
	conns []*net.UDPConn

	mu       sync.Mutex
	sessions map[udpKey]*udpSession
}

type udpKey struct {
	client, backend netip.AddrPort
	listen          int // which listen socket answers the client
}

type udpSession struct {
	conn *net.UDPConn // connected to the backend
	last atomic.Int64 // unix nanoseconds of the last datagram either way
}

// maxDatagram bounds a UDP payload.
const maxDatagram = 64 << 10

func (u *udpService) listen() error {
	u.sessions = map[udpKey]*udpSession{}
	for _, l := range u.cfg.Listen {
		c, err := net.ListenUDP(network("udp", l.Addr), net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.Addr, l.Port)))
		if err != nil {
			return fmt.Errorf("relay: service %s: listen udp %s: %w", u.cfg.Name, l, err)
		}
		u.conns = append(u.conns, c)
	}
	return nil
}

func (u *udpService) start() {
	for i := range u.conns {
		u.srv.loops.Add(1)
		go u.serve(i)
	}
	u.srv.log.Info("relay: serving", "service", u.cfg.Name, "protocol", u.cfg.Protocol, "listen", u.cfg.Listen)
}

// close closes the listen sockets and every session socket.
func (u *udpService) close() {
	for _, c := range u.conns {
		c.Close()
	}
	u.mu.Lock()
	for _, s := range u.sessions {
		s.conn.Close()
	}
	u.mu.Unlock()
}

// serve reads the datagrams of listen socket i until it is closed.
func (u *udpService) serve(i int) {
	defer u.srv.loops.Done()
	ln := u.conns[i]
	buf := make([]byte, maxDatagram)
	name := make([]byte, 0, 255)
	var reply []byte
	var tries []config.Backend
	for {
		n, client, err := ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			u.srv.log.Warn("relay: udp read", "service", u.cfg.Name, "err", err)
			continue
		}
		client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
		pkt := buf[:n]
		var m route.Match
		ok := true
		if u.cfg.Protocol == config.DNS {
			q, err := protocol.ParseDNSQuery(pkt, name)
			var rcode dnsmessage.RCode
			switch {
			case err != nil:
				rcode = dnsmessage.RCodeFormatError
			default:
				if m, ok = u.table.Lookup(string(q.Name)); !ok {
					rcode = dnsmessage.RCodeRefused
				}
			}
			if err != nil || !ok {
				u.srv.stats.UDPRejected.Add(1)
				if reply, err = protocol.AppendDNSError(reply[:0], pkt, rcode); err == nil {
					ln.WriteToUDPAddrPort(reply, client)
				}
				continue
			}
		} else if m, ok = u.table.Lookup(""); !ok {
			u.srv.stats.UDPDropped.Add(1)
			continue
		}
		tries = u.table.Order(m, client.Addr(), tries[:0])
		var backend netip.AddrPort
		for _, b := range tries {
			if !b.Requested && (u.cfg.Source != config.SourceClient || b.Addr.Addr().Is4() == client.Addr().Is4()) {
				backend = b.Addr
				break
			}
		}
		if !backend.IsValid() {
			u.srv.stats.UDPDropped.Add(1)
			continue
		}
		s, err := u.session(udpKey{client, backend, i})
		if err != nil {
			u.srv.stats.UDPDropped.Add(1)
			u.srv.log.Info("relay: udp session", "service", u.cfg.Name, "client", client, "backend", backend, "err", err)
			continue
		}
		if _, err := s.conn.Write(pkt); err != nil {
			u.srv.stats.UDPDropped.Add(1)
			continue
		}
		u.srv.stats.Datagrams.Add(1)
	}
}

// session returns the socket of key, opening it (and its reader) if needed.
func (u *udpService) session(key udpKey) (*udpSession, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if s := u.sessions[key]; s != nil {
		s.last.Store(time.Now().UnixNano()) // under mu: expiry checks it there
		return s, nil
	}
	if len(u.sessions) >= u.srv.opts.MaxSessions {
		return nil, errors.New("too many sessions")
	}
	d := net.Dialer{}
	if u.cfg.Source == config.SourceClient {
		d.LocalAddr = net.UDPAddrFromAddrPort(key.client)
		d.Control = transparent
	}
	c, err := d.Dial(network("udp", key.backend.Addr()), key.backend.String())
	if err != nil {
		return nil, err
	}
	s := &udpSession{conn: c.(*net.UDPConn)}
	s.last.Store(time.Now().UnixNano())
	u.sessions[key] = s
	u.srv.stats.Sessions.Add(1)
	u.srv.flows.Add(1)
	go u.replies(key, s)
	return s, nil
}

// replies returns the backend's datagrams to the client until the session
// has been idle for UDPIdle or its socket is closed.
func (u *udpService) replies(key udpKey, s *udpSession) {
	defer u.srv.flows.Done()
	defer func() {
		u.mu.Lock()
		if u.sessions[key] == s {
			delete(u.sessions, key)
		}
		u.mu.Unlock()
		s.conn.Close()
		u.srv.stats.Sessions.Add(-1)
	}()
	idle := u.srv.opts.UDPIdle
	ln := u.conns[key.listen]
	buf := make([]byte, maxDatagram)
	for {
		s.conn.SetReadDeadline(time.Unix(0, s.last.Load()).Add(idle))
		n, err := s.conn.Read(buf)
		if err != nil {
			if !isTimeout(err) {
				return
			}
			u.mu.Lock()
			if time.Since(time.Unix(0, s.last.Load())) < idle {
				u.mu.Unlock()
				continue // a datagram from the client renewed the session
			}
			delete(u.sessions, key) // no sender can pick it up any more
			u.mu.Unlock()
			return
		}
		s.last.Store(time.Now().UnixNano())
		// Counted before it leaves, so that a client holding the reply
		// finds it counted; taken back if the send fails.
		u.srv.stats.Replies.Add(1)
		if _, err := ln.WriteToUDPAddrPort(buf[:n], key.client); err != nil {
			u.srv.stats.Replies.Add(^uint64(0))
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
	}
}
