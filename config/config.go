// Package config reads falg's YAML configuration and validates all of it.
//
// Load reads the file with viper, then walks the raw tree by hand instead of
// decoding it with mapstructure: the walk knows where it is, so every problem
// is reported with its path (services[0].routes[1].backends[0]: ...), unknown
// keys are refused, and all problems are reported at once rather than the
// first. The result is a Config whose fields are typed and checked; nothing
// downstream parses a string from the file again.
package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Config is a validated falg configuration.
type Config struct {
	// Queue is the first nfqueue number; workers read Queue..Queue+Workers-1.
	Queue uint16
	// Workers is the number of queue readers.
	Workers int
	// FailOpen lets new flows pass unrouted when no falg reads the queue.
	FailOpen bool
	// Mark holds the packet and conntrack mark bits falg owns (contiguous,
	// at least two), from the lowest: injected packets, spliced flows, the
	// relay's diverted connections, then a field numbering UDP targets.
	Mark uint32
	// Admin is the path of the admin socket.
	Admin string
	// Metrics is the host:port of the Prometheus endpoint, or "".
	Metrics string
	// MaxPending caps the flows being set up at once (handshake done,
	// route not yet decided). SYNs past it are refused.
	MaxPending int
	// Services are the listens falg routes, in file order.
	Services []Service
}

// InjectMark is the packet mark falg sets on packets it sends itself: the
// lowest bit of Mark. The ruleset keeps such packets out of conntrack.
func (c *Config) InjectMark() uint32 { return c.Mark & -c.Mark }

// FlowMark is the conntrack mark of flows falg handed to the kernel: the
// second-lowest bit of Mark.
func (c *Config) FlowMark() uint32 {
	rest := c.Mark &^ c.InjectMark()
	return rest & -rest
}

// RelayMark is the packet mark of connections the relay data plane
// diverts to its transparent sockets: the third-lowest bit of Mark, or 0
// when Mark has only two bits.
func (c *Config) RelayMark() uint32 {
	rest := c.Mark &^ c.InjectMark() &^ c.FlowMark()
	return rest & -rest
}

// UDPMarkMask holds the bits of Mark above the inject, flow and relay
// bits: the field whose values number the UDP targets (nft.UDPTargets).
func (c *Config) UDPMarkMask() uint32 {
	return c.Mark &^ c.InjectMark() &^ c.FlowMark() &^ c.RelayMark()
}

// Protocol names what a service parses in the first bytes of a flow.
type Protocol string

// Protocols falg knows.
const (
	TLS         Protocol = "tls"
	HTTP        Protocol = "http"
	Connect     Protocol = "connect"
	SOCKS5      Protocol = "socks5"
	Instruction Protocol = "instruction"
	Proxy       Protocol = "proxy"
	DNS         Protocol = "dns"
	UDP         Protocol = "udp"
	None        Protocol = "none"
)

var protocols = []Protocol{TLS, HTTP, Connect, SOCKS5, Instruction, Proxy, DNS, UDP, None}

// TCP reports whether the protocol's listens take TCP connections.
func (p Protocol) TCP() bool { return p != UDP }

// UDP reports whether the protocol's listens take UDP datagrams.
func (p Protocol) UDP() bool { return p == UDP || p == DNS }

// Quiet reports whether falg sends the service's clients nothing between
// its SYN-ACK and the hand-over, and keeps nothing of theirs pending after
// it: the client speaks first (tls, http, dns over TCP) and the backend
// gets no PROXY header that falg would have to see acknowledged. Until the
// hand-over such a client's pure ACKs tell falg nothing, and the ruleset
// drops them in the kernel.
func (s *Service) Quiet() bool {
	switch s.Protocol {
	case TLS, HTTP, DNS:
		return s.ProxyProtocol == "off" && s.Dataplane != "relay"
	}
	return false
}

// NamesDestination reports whether the client names the destination
// host:port itself (for proxy: the PROXY header's destination), so that a
// route may use the requested backend.
func (p Protocol) NamesDestination() bool {
	return p == Connect || p == SOCKS5 || p == Instruction || p == Proxy
}

// Named reports whether the protocol yields a name to route on.
func (p Protocol) Named() bool { return p != UDP && p != None }

// Service is one set of listens with one protocol and one routing table.
type Service struct {
	Name          string
	Listen        []Listen
	Protocol      Protocol
	Source        Source
	ProxyProtocol string // "off", "v1" or "v2"
	AcceptProxy   []netip.Prefix
	Dataplane     string // "splice" or "relay"
	Timeouts      Timeouts
	Routes        []Route
	// Default are the backends for names no route matches; nil means reject.
	Default []Backend
	// Balance is how Default picks among its backends.
	Balance Balance
	// Limits bound what the service takes on.
	Limits Limits
	// Users are the user names and passwords connect (Proxy-Authorization:
	// Basic) and socks5 (RFC 1929) clients must present; nil means none.
	// They are read from the file the users key names.
	Users map[string]string
}

// Limits bound a service's load. Zero means no limit.
type Limits struct {
	// MaxPending caps the service's flows in setup at once.
	MaxPending int
	// ClientRate is the new flows per second one client address may open,
	// with bursts of ClientBurst.
	ClientRate, ClientBurst int
}

// Source says which address the backend sees.
type Source string

// Sources.
const (
	SourceClient Source = "client" // the client's own address; the backend routes back via falg
	SourceRouter Source = "router" // the router's address (SNAT)
)

// Timeouts bound the phases of a flow's setup.
type Timeouts struct {
	FirstData time.Duration // client's first bytes after its SYN
	Connect   time.Duration // backend handshake, per backend tried
}

// Listen is an address clients connect to.
type Listen struct {
	// Addr is the address asked for; the zero Addr means any destination.
	Addr netip.Addr
	Port uint16
}

// Any reports whether the listen takes any destination address.
func (l Listen) Any() bool { return !l.Addr.IsValid() }

// String formats the listen as it is written in the config.
func (l Listen) String() string {
	if l.Any() {
		return "*:" + strconv.Itoa(int(l.Port))
	}
	return netip.AddrPortFrom(l.Addr, l.Port).String()
}

// Route sends the names it matches to its backends.
type Route struct {
	Match    []string
	Backends []Backend
	Balance  Balance
}

// Backend is where a flow goes: a fixed address, or the one the client
// requested (connect, socks5, instruction).
type Backend struct {
	Addr      netip.AddrPort
	Requested bool
}

// String formats the backend as it is written in the config.
func (b Backend) String() string {
	if b.Requested {
		return "requested"
	}
	return b.Addr.String()
}

// Balance picks one of a route's backends.
type Balance string

// Balance modes.
const (
	RoundRobin Balance = "roundrobin"
	SourceHash Balance = "source-hash"
	Random     Balance = "random"
)

// Problem is one thing wrong with a configuration, at a path such as
// services[0].routes[1].backends[0].
type Problem struct {
	Path string
	Msg  string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

// Problems is every problem found in a configuration. It is the error Load
// and Parse return when the configuration is invalid.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (ps *Problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}
