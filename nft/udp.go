package nft

import (
	"fmt"
	"math/bits"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"falg/config"
)

// Chains of the UDP data path, present only when a service takes UDP.
const (
	// ChainUDPZones runs just after the raw chain and before conntrack: it
	// puts each DNS query falg has routed, and each answer from a DNS
	// backend, into that backend's conntrack zone.
	ChainUDPZones = "udp_zones"
	// ChainUDPFlows runs after conntrack: it queues the first packet of
	// each new flow to a udp relay listen.
	ChainUDPFlows = "udp_flows"
)

// ZoneBase is the conntrack zone of the first DNS backend; the others
// follow it. Zone 0, where every other flow lives, is never used.
const ZoneBase = 1

// UDPTarget is one backend UDP traffic is sent to. falg accepts a packet
// with the target's mark, and static rules do the rest: the zone (DNS),
// the DNAT to the backend and, for `source: router`, a masquerade.
type UDPTarget struct {
	// Mark is the packet mark value, inside Ruleset.UDPMarkMask, that
	// selects this target. Values are unique within a family.
	Mark uint32
	// Backend is where the flow goes.
	Backend netip.AddrPort
	// SNAT masquerades the flow behind the router's address (`source: router`).
	SNAT bool
	// Zone is the conntrack zone of a DNS backend's bindings, so that each
	// query gets its own binding to the backend its name routes to even
	// when a client sends all its queries from one port; 0 for the udp
	// relay, whose flows keep one binding for their life.
	Zone uint16
}

// DNS reports whether t serves a dns service (it has a zone).
func (t UDPTarget) DNS() bool { return t.Zone != 0 }

// UDPMarkMask is the part of the mark bits falg owns that numbers UDP
// targets (config.Config.UDPMarkMask).
func UDPMarkMask(c *config.Config) uint32 { return c.UDPMarkMask() }

// UDPTargets numbers the backends of c's dns and udp services: one target
// per backend, source mode and kind, marks counted per family from 1 in
// file order, zones per DNS backend address. It fails when the mark bits
// cannot number them all, or when one backend address serves both a dns
// and a udp service (answers from a DNS backend are put in its zone, which
// would hide the relay's flows).
func UDPTargets(c *config.Config) ([]UDPTarget, error) {
	mask := UDPMarkMask(c)
	shift := bits.TrailingZeros32(mask)
	limit := uint32(0)
	if mask != 0 {
		limit = mask >> shift
	}
	var ts []UDPTarget
	next := map[bool]uint32{} // is4 -> last mark number given
	zones := map[netip.AddrPort]uint16{}
	kinds := map[netip.AddrPort]config.Protocol{}
	var errs []string
	for i, s := range c.Services {
		if !s.Protocol.UDP() || s.Dataplane == "relay" {
			continue
		}
		var bs []config.Backend
		if s.Protocol == config.DNS {
			for _, r := range s.Routes {
				bs = append(bs, r.Backends...)
			}
		}
		bs = append(bs, s.Default...)
		for _, b := range bs {
			if b.Requested {
				continue
			}
			if k, ok := kinds[b.Addr]; ok && k != s.Protocol {
				errs = append(errs, fmt.Sprintf("services[%d]: backend %s serves both a dns and a udp service", i, b.Addr))
				continue
			}
			kinds[b.Addr] = s.Protocol
			t := UDPTarget{Backend: b.Addr, SNAT: s.Source == config.SourceRouter}
			if s.Protocol == config.DNS {
				z, ok := zones[b.Addr]
				if !ok {
					z = uint16(ZoneBase + len(zones))
					zones[b.Addr] = z
				}
				t.Zone = z
			}
			if hasTarget(ts, t) {
				continue
			}
			is4 := b.Addr.Addr().Is4()
			n := next[is4] + 1
			if n > limit {
				errs = append(errs, fmt.Sprintf("services[%d]: backend %s: mark %#08x numbers at most %d UDP backends per family: give falg more mark bits",
					i, b.Addr, c.Mark, limit))
				continue
			}
			next[is4] = n
			t.Mark = n << shift
			ts = append(ts, t)
		}
	}
	if len(errs) > 0 {
		return ts, fmt.Errorf("nft: %s", strings.Join(errs, "; "))
	}
	return ts, nil
}

func hasTarget(ts []UDPTarget, t UDPTarget) bool {
	for _, o := range ts {
		if o.Backend == t.Backend && o.SNAT == t.SNAT && o.Zone == t.Zone {
			return true
		}
	}
	return false
}

// udpRule is one rule of the UDP data path.
type udpRule struct {
	family byte
	ctNew  bool       // ct state new
	daddr  netip.Addr // a listen; invalid: any
	dport  uint16
	saddr  netip.Addr // a backend's answers
	sport  uint16
	mask   uint32 // meta mark & mask == mark; 0: no match
	mark   uint32
	zone   uint16         // ct zone set
	dnat   netip.AddrPort // dnat to
	masq   bool
	queue  bool
}

// zoneRules put routed queries and the answers of DNS backends into the
// backends' zones.
func (r *Ruleset) zoneRules() []udpRule {
	var rules []udpRule
	for _, t := range r.UDPTargets {
		if t.DNS() {
			rules = append(rules, udpRule{family: familyOf(t.Backend.Addr()), mask: r.UDPMarkMask, mark: t.Mark, zone: t.Zone})
		}
	}
	seen := map[netip.AddrPort]bool{}
	for _, t := range r.UDPTargets {
		if t.DNS() && !seen[t.Backend] {
			seen[t.Backend] = true
			rules = append(rules, udpRule{family: familyOf(t.Backend.Addr()), saddr: t.Backend.Addr(), sport: t.Backend.Port(), zone: t.Zone})
		}
	}
	return rules
}

// flowRules queue the first packet of each new udp relay flow.
func (r *Ruleset) flowRules() []udpRule {
	var rules []udpRule
	for _, l := range r.UDPFlowListens {
		families := []byte{nfproto4, nfproto6}
		if l.Addr.IsValid() {
			families = []byte{familyOf(l.Addr)}
		}
		for _, f := range families {
			rules = append(rules, udpRule{family: f, ctNew: true, daddr: l.Addr, dport: l.Port, queue: true})
		}
	}
	return rules
}

// dnatRules send each target's packets to its backend.
func (r *Ruleset) dnatRules() []udpRule {
	var rules []udpRule
	for _, t := range r.UDPTargets {
		rules = append(rules, udpRule{family: familyOf(t.Backend.Addr()), mask: r.UDPMarkMask, mark: t.Mark, dnat: t.Backend})
	}
	return rules
}

// snatRules masquerade the targets of `source: router` services.
func (r *Ruleset) snatRules() []udpRule {
	var rules []udpRule
	for _, t := range r.UDPTargets {
		if t.SNAT {
			rules = append(rules, udpRule{family: familyOf(t.Backend.Addr()), mask: r.UDPMarkMask, mark: t.Mark, masq: true})
		}
	}
	return rules
}

func (r *Ruleset) hasUDP() bool { return len(r.UDPTargets) > 0 || len(r.UDPFlowListens) > 0 }

// udpText renders one rule the way nft 1.0 lists it.
func (r *Ruleset) udpText(ru udpRule) string {
	var parts []string
	ip, fam := "ip", "ipv4"
	if ru.family == nfproto6 {
		ip, fam = "ip6", "ipv6"
	}
	if ru.ctNew {
		parts = append(parts, "ct state new")
	}
	switch {
	case ru.daddr.IsValid():
		parts = append(parts, fmt.Sprintf("%s daddr %s", ip, ru.daddr))
	case ru.saddr.IsValid():
		parts = append(parts, fmt.Sprintf("%s saddr %s", ip, ru.saddr))
	case ru.dport != 0:
		parts = append(parts, "meta nfproto "+fam)
	case ru.mask != 0:
		parts = append(parts, "meta nfproto "+fam, "meta l4proto udp",
			fmt.Sprintf("meta mark & 0x%08x == 0x%08x", ru.mask, ru.mark))
	}
	if ru.sport != 0 {
		parts = append(parts, fmt.Sprintf("udp sport %d", ru.sport))
	}
	if ru.dport != 0 {
		parts = append(parts, fmt.Sprintf("udp dport %d", ru.dport))
	}
	switch {
	case ru.queue:
		parts = append(parts, r.text(rule{queue: true}))
	case ru.zone != 0:
		parts = append(parts, "counter", fmt.Sprintf("ct zone set %d", ru.zone))
	case ru.dnat.IsValid():
		parts = append(parts, "counter", fmt.Sprintf("dnat %s to %s", ip, ru.dnat))
	case ru.masq:
		parts = append(parts, "counter", "masquerade")
	}
	return strings.Join(parts, " ")
}

// udpExprs compiles one rule into nftables expressions.
func (r *Ruleset) udpExprs(ru udpRule, kind QueueKind) []expr.Any {
	var e []expr.Any
	v6 := ru.family == nfproto6
	if ru.ctNew {
		e = append(e, ctState(expr.CtStateBitNEW)...)
	}
	e = append(e, familyProto(ru.family, unix.IPPROTO_UDP)...)
	if ru.mask != 0 {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(ru.mask), Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(ru.mark)},
		)
	}
	addr := func(a netip.Addr, src bool) {
		off, n := uint32(16), uint32(4)
		switch {
		case v6 && src:
			off, n = 8, 16
		case v6:
			off, n = 24, 16
		case src:
			off = 12
		}
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()})
	}
	port := func(p uint16, off uint32) {
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)})
	}
	if ru.daddr.IsValid() {
		addr(ru.daddr, false)
	}
	if ru.saddr.IsValid() {
		addr(ru.saddr, true)
	}
	if ru.sport != 0 {
		port(ru.sport, 0)
	}
	if ru.dport != 0 {
		port(ru.dport, 2)
	}
	e = append(e, &expr.Counter{})
	switch {
	case ru.queue:
		e = append(e, r.queueExpr(kind))
	case ru.zone != 0:
		e = append(e,
			&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint16(ru.zone)},
			&expr.Ct{Key: expr.CtKeyZONE, Register: 1, SourceRegister: true})
	case ru.dnat.IsValid():
		fam := uint32(unix.NFPROTO_IPV4)
		if v6 {
			fam = unix.NFPROTO_IPV6
		}
		e = append(e,
			&expr.Immediate{Register: 1, Data: ru.dnat.Addr().AsSlice()},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(ru.dnat.Port())},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: 1, RegProtoMin: 2, Specified: true})
	case ru.masq:
		e = append(e, &expr.Masq{})
	}
	return e
}

// addUDPRules adds the UDP chains and rules to table t of c.
func (r *Ruleset) addUDPRules(c *nftables.Conn, t *nftables.Table, natPre, natPost *nftables.Chain, kind QueueKind,
	chain func(string, nftables.ChainType, *nftables.ChainHook, *nftables.ChainPriority) *nftables.Chain) {
	if !r.hasUDP() {
		return
	}
	zones := chain(ChainUDPZones, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRef(*nftables.ChainPriorityRaw+1))
	flows := chain(ChainUDPFlows, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityMangle)
	for _, x := range []struct {
		ch    *nftables.Chain
		rules []udpRule
	}{{zones, r.zoneRules()}, {flows, r.flowRules()}, {natPre, r.dnatRules()}, {natPost, r.snatRules()}} {
		for _, ru := range x.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: x.ch, Exprs: r.udpExprs(ru, kind)})
		}
	}
}
