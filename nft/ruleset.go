package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"falg/config"
)

// Table is the name of falg's nftables table (family inet).
const Table = "falg"

// Chain names in the table.
const (
	ChainPrerouting     = "prerouting"      // raw priority: queue first packets
	ChainBackends       = "backend_replies" // mangle priority: queue backends' answers to falg
	ChainOutput         = "output"          // raw priority: notrack injected packets
	ChainForward        = "forward"         // filter priority: counts spliced flows by ct mark
	ChainNATPrerouting  = "nat_prerouting"  // empty: makes NAT hooks register
	ChainNATPostrouting = "nat_postrouting" // empty: makes NAT hooks register
)

// Set names in the table.
const (
	SetPending4  = "pending4"  // ipv4 saddr . sport . daddr . dport of flows falg is setting up
	SetPending6  = "pending6"  // the same for ipv6
	SetBackends4 = "backends4" // ipv4 addr . port of configured TCP backends
	SetBackends6 = "backends6"
)

// Proto is a transport protocol number (unix.IPPROTO_TCP or IPPROTO_UDP).
type Proto uint8

// Transport protocols falg queues.
const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	if p == UDP {
		return "udp"
	}
	return "tcp"
}

// Listen is one address a service takes flows on.
type Listen struct {
	Proto Proto
	Addr  netip.Addr // invalid: any destination
	Port  uint16
}

// Ruleset is falg's whole table for one configuration. It is a plain value:
// String prints it as nft input, Install loads it into the kernel, and both
// are generated from the same rules so that they cannot drift apart.
type Ruleset struct {
	// QueueNum is the first queue; QueueTotal queues are used, with flows
	// spread over them by the kernel's address hash (both directions of a
	// flow hash alike).
	QueueNum, QueueTotal uint16
	// Bypass lets packets pass when no program reads the queue (fail_open).
	Bypass bool
	// InjectMark is the mark of packets falg sends itself; they are not tracked.
	InjectMark uint32
	// FlowMark is the conntrack mark of flows falg handed to the kernel.
	FlowMark uint32
	// PendingSize caps the flows being set up at once; a SYN past the cap
	// is not queued and reaches the local stack, which refuses it.
	PendingSize uint32
	// PendingTimeout is how long a pending flow stays in the set unless
	// falg removes it sooner.
	PendingTimeout time.Duration
	Listens        []Listen
	// QuietListens are the TCP listens of quiet services
	// (config.Service.Quiet): the pure ACKs of their pending flows, the
	// handshake's last one above all, are dropped by the kernel instead of
	// being queued, as falg would drop them anyway. A packet the rule
	// cannot see to be a pure ACK (IP or TCP options) is queued as before.
	QuietListens []Listen
	// Backends are the fixed TCP backends of all services: their SYN-ACKs
	// are queued.
	Backends []netip.AddrPort
	// UDPMarkMask holds the mark bits that number UDPTargets.
	UDPMarkMask uint32
	// UDPTargets are the backends of dns and udp services (UDPTargets).
	UDPTargets []UDPTarget
	// UDPFlowListens are the listens of udp services: the first packet of
	// each new flow is queued (Listens holds the DNS ones, every packet of
	// which is queued).
	UDPFlowListens []Listen
}

// DefaultPendingTimeout is how long an entry stays in a pending set
// unless falg deletes it first.
const DefaultPendingTimeout = time.Minute

// New derives the ruleset for configuration c.
func New(c *config.Config) *Ruleset {
	r := &Ruleset{
		QueueNum:       c.Queue,
		QueueTotal:     uint16(c.Workers),
		Bypass:         c.FailOpen,
		InjectMark:     c.InjectMark(),
		FlowMark:       c.FlowMark(),
		PendingSize:    uint32(2 * c.MaxPending), // client and backend tuples
		PendingTimeout: DefaultPendingTimeout,
		UDPMarkMask:    UDPMarkMask(c),
	}
	// A configuration whose targets do not all fit is refused by falg run;
	// the ruleset carries those that do.
	r.UDPTargets, _ = UDPTargets(c)
	for _, s := range c.Services {
		if s.Dataplane == "relay" {
			continue // falg listens itself: nothing to queue
		}
		for _, l := range s.Listen {
			if s.Protocol.TCP() {
				r.Listens = append(r.Listens, Listen{TCP, l.Addr, l.Port})
			}
			if s.Quiet() {
				r.QuietListens = append(r.QuietListens, Listen{TCP, l.Addr, l.Port})
			}
			switch s.Protocol {
			case config.DNS:
				r.Listens = append(r.Listens, Listen{UDP, l.Addr, l.Port})
			case config.UDP:
				r.UDPFlowListens = append(r.UDPFlowListens, Listen{UDP, l.Addr, l.Port})
			}
		}
		if !s.Protocol.TCP() {
			continue
		}
		for _, rt := range s.Routes {
			for _, b := range rt.Backends {
				if !b.Requested && !slices.Contains(r.Backends, b.Addr) {
					r.Backends = append(r.Backends, b.Addr)
				}
			}
		}
		for _, b := range s.Default {
			if !slices.Contains(r.Backends, b.Addr) {
				r.Backends = append(r.Backends, b.Addr)
			}
		}
	}
	return r
}

// rule is one rule in a form both the printer and the installer read.
type rule struct {
	family   byte       // 0 (any), nfproto4 or nfproto6
	proto    Proto      // 0: no transport match
	daddr    netip.Addr // invalid: no match
	dport    uint16     // 0: no match
	synOnly  bool       // tcp flags syn / fin,syn,rst,ack
	synAck   bool       // tcp flags syn,ack / fin,syn,rst,ack
	rst      bool       // tcp flags & rst == rst
	invalid  bool       // ct state invalid: conntrack has no entry for it
	addSet   string     // add the 4-tuple to this pending set
	inSet    string     // match the 4-tuple against this pending set
	pureAck  uint8      // a TCP header of this length and nothing after it, tcp flags == ack
	drop     bool       // verdict drop
	srcInSet string     // match saddr . sport against this backend set
	queue    bool
	notrack  uint32 // meta mark & notrack == notrack notrack
	ctMark   uint32 // ct mark & ctMark == ctMark counter
}

const (
	nfproto4 = 2  // NFPROTO_IPV4
	nfproto6 = 10 // NFPROTO_IPV6
)

func familyOf(a netip.Addr) byte {
	if a.Is4() {
		return nfproto4
	}
	return nfproto6
}

func pendingSet(family byte) string {
	if family == nfproto4 {
		return SetPending4
	}
	return SetPending6
}

func (r *Ruleset) preroutingRules() []rule {
	var rules []rule
	for _, l := range r.Listens {
		for _, f := range families(l.Addr) {
			ru := rule{family: f, proto: l.Proto, daddr: l.Addr, dport: l.Port, queue: true}
			if l.Proto == TCP {
				ru.synOnly = true
				ru.addSet = pendingSet(f)
			}
			rules = append(rules, ru)
		}
	}
	for _, l := range r.QuietListens {
		for _, f := range families(l.Addr) {
			// A pure ACK without options, and one with timestamps (NOP,
			// NOP, TS: 12 bytes), as clients send them once timestamps
			// are on.
			for _, hdr := range []uint8{20, 32} {
				rules = append(rules, rule{family: f, proto: TCP, daddr: l.Addr, dport: l.Port,
					inSet: pendingSet(f), pureAck: hdr, drop: true})
			}
		}
	}
	for _, f := range []byte{nfproto4, nfproto6} {
		rules = append(rules, rule{family: f, proto: TCP, inSet: pendingSet(f), queue: true})
	}
	return rules
}

// families are the families of rules for a listen on addr: its own, or
// both for any address.
func families(addr netip.Addr) []byte {
	if addr.IsValid() {
		return []byte{familyOf(addr)}
	}
	return []byte{nfproto4, nfproto6}
}

// backendRules catch the backends' answers to falg's SYNs: a SYN-ACK, or a
// RST. They run after conntrack and take only packets it has no entry for,
// so traffic of spliced flows and of other clients of the same backends
// never reaches the queue.
func (r *Ruleset) backendRules() []rule {
	var rules []rule
	for _, b := range []struct {
		family byte
		set    string
	}{{nfproto4, SetBackends4}, {nfproto6, SetBackends6}} {
		if r.hasBackends(b.family) {
			rules = append(rules,
				rule{family: b.family, proto: TCP, invalid: true, srcInSet: b.set, synAck: true, queue: true},
				rule{family: b.family, proto: TCP, invalid: true, srcInSet: b.set, rst: true, queue: true})
		}
	}
	return rules
}

func (r *Ruleset) hasBackends(family byte) bool {
	for _, b := range r.Backends {
		if familyOf(b.Addr()) == family {
			return true
		}
	}
	return false
}

func (r *Ruleset) backends(family byte) []netip.AddrPort {
	var out []netip.AddrPort
	for _, b := range r.Backends {
		if familyOf(b.Addr()) == family {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return out
}

// String prints the ruleset as `nft -f` input, in the form `nft list table`
// prints it (counters without their values).
func (r *Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", Table)
	for _, s := range []struct {
		name, typ string
	}{
		{SetPending4, "ipv4_addr . inet_service . ipv4_addr . inet_service"},
		{SetPending6, "ipv6_addr . inet_service . ipv6_addr . inet_service"},
	} {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n\t\tsize %d\n\t\tflags dynamic,timeout\n\t\ttimeout %s\n\t}\n\n",
			s.name, s.typ, r.PendingSize, nftDuration(r.PendingTimeout))
	}
	for _, s := range []struct {
		name, typ string
		family    byte
	}{
		{SetBackends4, "ipv4_addr . inet_service", nfproto4},
		{SetBackends6, "ipv6_addr . inet_service", nfproto6},
	} {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n", s.name, s.typ)
		if bs := r.backends(s.family); len(bs) > 0 {
			elems := make([]string, len(bs))
			for i, a := range bs {
				elems[i] = fmt.Sprintf("%s . %d", a.Addr(), a.Port())
			}
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(elems, ",\n\t\t\t     "))
		}
		b.WriteString("\t}\n\n")
	}
	type chain struct {
		name, hook string
		rules      []rule
		udp        []udpRule
	}
	chains := []chain{
		{ChainPrerouting, "type filter hook prerouting priority raw; policy accept;", r.preroutingRules(), nil},
		{ChainBackends, "type filter hook prerouting priority mangle; policy accept;", r.backendRules(), nil},
		{ChainOutput, "type filter hook output priority raw; policy accept;", []rule{{notrack: r.InjectMark}}, nil},
		{ChainForward, "type filter hook forward priority filter; policy accept;", []rule{{ctMark: r.FlowMark}}, nil},
		{ChainNATPrerouting, "type nat hook prerouting priority dstnat; policy accept;", nil, r.dnatRules()},
		{ChainNATPostrouting, "type nat hook postrouting priority srcnat; policy accept;", nil, r.snatRules()},
	}
	if r.hasUDP() {
		chains = append(chains,
			chain{ChainUDPZones, "type filter hook prerouting priority raw + 1; policy accept;", nil, r.zoneRules()},
			chain{ChainUDPFlows, "type filter hook prerouting priority mangle; policy accept;", nil, r.flowRules()})
	}
	for i, c := range chains {
		fmt.Fprintf(&b, "\tchain %s {\n\t\t%s\n", c.name, c.hook)
		for _, ru := range c.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r.text(ru))
		}
		for _, ru := range c.udp {
			fmt.Fprintf(&b, "\t\t%s\n", r.udpText(ru))
		}
		b.WriteString("\t}\n")
		if i < len(chains)-1 {
			b.WriteString("\n")
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// text renders one rule the way nft 1.0 lists it.
func (r *Ruleset) text(ru rule) string {
	var parts []string
	ip := "ip"
	if ru.family == nfproto6 {
		ip = "ip6"
	}
	tuple := fmt.Sprintf("%s saddr . tcp sport . %s daddr . tcp dport", ip, ip)
	switch {
	case ru.notrack != 0:
		return fmt.Sprintf("meta mark & 0x%08x == 0x%08x notrack", ru.notrack, ru.notrack)
	case ru.ctMark != 0:
		return fmt.Sprintf("ct mark & 0x%08x == 0x%08x counter", ru.ctMark, ru.ctMark)
	}
	if ru.invalid {
		parts = append(parts, "ct state invalid")
	}
	switch {
	case ru.daddr.IsValid():
		parts = append(parts, fmt.Sprintf("%s daddr %s", ip, ru.daddr))
	case ru.dport != 0 && ru.inSet == "": // a set of addresses says the family itself
		parts = append(parts, "meta nfproto "+map[byte]string{nfproto4: "ipv4", nfproto6: "ipv6"}[ru.family])
	}
	if ru.inSet != "" {
		parts = append(parts, fmt.Sprintf("%s @%s", tuple, ru.inSet))
	}
	if ru.srcInSet != "" {
		parts = append(parts, fmt.Sprintf("%s saddr . tcp sport @%s", ip, ru.srcInSet))
	}
	if ru.dport != 0 {
		parts = append(parts, fmt.Sprintf("%s dport %d", ru.proto, ru.dport))
	}
	if ru.pureAck != 0 {
		if ru.family == nfproto6 {
			parts = append(parts, fmt.Sprintf("ip6 length %d", ru.pureAck))
		} else {
			parts = append(parts, fmt.Sprintf("ip length %d", 20+int(ru.pureAck)))
		}
		if ru.pureAck != 20 {
			parts = append(parts, fmt.Sprintf("tcp doff %d", ru.pureAck/4))
		}
		parts = append(parts, "tcp flags == ack")
	}
	if ru.synOnly {
		parts = append(parts, "tcp flags syn / fin,syn,rst,ack")
	}
	if ru.synAck {
		parts = append(parts, "tcp flags syn,ack / fin,syn,rst,ack")
	}
	if ru.rst {
		parts = append(parts, "tcp flags & rst == rst")
	}
	if ru.addSet != "" {
		parts = append(parts, fmt.Sprintf("add @%s { %s }", ru.addSet, tuple))
	}
	parts = append(parts, "counter")
	if ru.drop {
		parts = append(parts, "drop")
	}
	if ru.queue {
		q := fmt.Sprintf("queue num %d", r.QueueNum)
		if r.QueueTotal > 1 {
			q = fmt.Sprintf("queue num %d-%d", r.QueueNum, r.QueueNum+r.QueueTotal-1)
		}
		if r.Bypass {
			q += " bypass"
		}
		parts = append(parts, q)
	}
	return strings.Join(parts, " ")
}

// nftDuration formats d as nft lists a timeout: 1m, 30s, 1h2m3s.
func nftDuration(d time.Duration) string {
	var b strings.Builder
	for _, u := range []struct {
		d time.Duration
		s string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.s)
			d -= n * u.d
		}
	}
	if b.Len() == 0 {
		return "0s"
	}
	return b.String()
}
