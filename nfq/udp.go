package nfq

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"unsafe"

	"golang.org/x/net/dns/dnsmessage"

	"falg/config"
	"falg/nft"
	"falg/protocol"
	"falg/route"
)

// udpHandler routes the UDP packets the ruleset queues: every query to a
// dns listen, and the first packet of each new flow to a udp listen. It
// never forwards a packet itself: it accepts it with the mark of the
// backend it chose (nft.UDPTarget), and the ruleset's static rules put the
// packet in that backend's conntrack zone (DNS), DNAT it to the backend and
// masquerade it for `source: router`. Answers come back through conntrack
// and are never queued.
type udpHandler struct {
	log      *slog.Logger
	stats    *EngineStats
	inj      *Injector
	mask     uint32 // nft.UDPMarkMask: the mark bits falg's verdicts set
	byListen map[config.Listen]*udpService
	recent   *udpMemo
}

// udpService is one dns or udp service.
type udpService struct {
	cfg    *config.Service
	dns    bool
	routes *route.Table
	marks  map[netip.AddrPort]uint32 // backend -> mark of its target
}

// newUDPHandler prepares the handler for c's dns and udp services.
func newUDPHandler(c *config.Config, inj *Injector, log *slog.Logger, stats *EngineStats) (*udpHandler, error) {
	h := &udpHandler{
		log:      log,
		stats:    stats,
		inj:      inj,
		mask:     nft.UDPMarkMask(c),
		byListen: map[config.Listen]*udpService{},
		recent:   newUDPMemo(),
	}
	targets, err := nft.UDPTargets(c)
	if err != nil {
		return nil, fmt.Errorf("nfq: %w", err)
	}
	for i := range c.Services {
		sc := &c.Services[i]
		if !sc.Protocol.UDP() || sc.Dataplane == "relay" {
			continue
		}
		rt, err := route.New(sc)
		if err != nil {
			return nil, err
		}
		s := &udpService{cfg: sc, dns: sc.Protocol == config.DNS, routes: rt, marks: map[netip.AddrPort]uint32{}}
		snat := sc.Source == config.SourceRouter
		for _, t := range targets {
			if t.SNAT == snat && t.DNS() == s.dns {
				s.marks[t.Backend] = t.Mark
			}
		}
		for _, l := range sc.Listen {
			h.byListen[l] = s
		}
	}
	return h, nil
}

// lookup finds the service listening on dst.
func (h *udpHandler) lookup(dst netip.AddrPort) *udpService {
	if s := h.byListen[config.Listen{Addr: dst.Addr(), Port: dst.Port()}]; s != nil {
		return s
	}
	return h.byListen[config.Listen{Port: dst.Port()}]
}

// packet handles one queued UDP packet.
func (h *udpHandler) packet(q *Queue, p *Packet, s *segment) {
	svc := h.lookup(s.dst)
	if svc == nil {
		h.stats.Unknown.Add(1)
		q.Verdict(p.ID, Accept)
		return
	}
	if svc.dns {
		h.query(q, p, s, svc)
		return
	}
	h.flow(q, p, s, svc)
}

// query routes one DNS query by its name: accepted with the mark of the
// backend its zone routes to, or answered by falg itself.
func (h *udpHandler) query(q *Queue, p *Packet, s *segment, svc *udpService) {
	h.stats.DNSQueries.Add(1)
	var nameBuf [255]byte
	dq, err := protocol.ParseDNSQuery(s.payload, nameBuf[:0])
	if err != nil {
		rcode := dnsmessage.RCodeFormatError
		if errors.Is(err, protocol.ErrNotQuery) {
			rcode = dnsmessage.RCodeNotImplemented // another opcode; a response is not answered
		}
		if h.answer(s, rcode) {
			h.stats.DNSFormErr.Add(1)
		} else {
			h.stats.DNSDropped.Add(1)
		}
		h.log.Debug("dns: malformed query", "client", s.src, "len", len(s.payload), "err", err)
		q.Verdict(p.ID, Drop)
		return
	}
	name := ""
	if len(dq.Name) > 0 {
		// The route table only reads the name during the lookup.
		name = unsafe.String(&dq.Name[0], len(dq.Name))
	}
	if m, ok := svc.routes.Lookup(name); ok {
		if mark, ok := h.pick(svc, m, s.src.Addr()); ok {
			q.VerdictWithMark(p.ID, Accept, p.Mark&^h.mask|mark)
			return
		}
	}
	h.stats.DNSRefused.Add(1)
	h.answer(s, dnsmessage.RCodeRefused)
	q.Verdict(p.ID, Drop)
}

// pick returns the mark of the first backend of m, in balance order, that
// has the client's address family: NAT cannot cross families.
func (h *udpHandler) pick(svc *udpService, m route.Match, client netip.Addr) (uint32, bool) {
	var buf [8]config.Backend
	for _, b := range svc.routes.Order(m, client, buf[:0]) {
		if b.Addr.Addr().Is4() == client.Is4() {
			if mark, ok := svc.marks[b.Addr]; ok {
				return mark, true
			}
		}
	}
	return 0, false
}

// answer sends the client the DNS error rcode for its query, from the
// address and port it asked. It reports false when the message cannot be
// answered: no full header, or a response.
func (h *udpHandler) answer(s *segment, rcode dnsmessage.RCode) bool {
	b := answerBufs.Get().(*answerBuf)
	defer answerBufs.Put(b)
	out, ok := b.build(s, rcode)
	if !ok {
		return false
	}
	if err := h.inj.Send(out, s.src.Addr()); err != nil {
		h.log.Warn("dns: answer", "client", s.src, "rcode", rcode, "err", err)
	}
	return true
}

// answerBuf holds falg's DNS error answer while it is built and sent.
type answerBuf struct {
	msg [512]byte
	pkt [40 + udpHeaderLen + 512]byte
}

var answerBufs = sync.Pool{New: func() any { return new(answerBuf) }}

// build returns the packet answering the query in s with rcode, from the
// address it was sent to.
func (b *answerBuf) build(s *segment, rcode dnsmessage.RCode) ([]byte, bool) {
	reply, err := protocol.AppendDNSError(b.msg[:0], s.payload, rcode)
	if err != nil {
		return nil, false
	}
	return appendUDP(b.pkt[:0], s.dst, s.src, reply), true
}

// flow gives a new udp relay flow its backend, by the service's balance.
// The memo keeps the choice for the packets the client sent before
// conntrack confirmed the flow's first one.
func (h *udpHandler) flow(q *Queue, p *Packet, s *segment, svc *udpService) {
	t := tuple{s.src, s.dst}
	mark, ok := h.recent.get(t)
	if !ok {
		m, routed := svc.routes.Lookup("")
		if routed {
			mark, ok = h.pick(svc, m, s.src.Addr())
		}
		if !ok {
			h.stats.UDPNoBackend.Add(1)
			q.Verdict(p.ID, Drop)
			return
		}
		h.recent.put(t, mark)
		h.stats.UDPFlows.Add(1)
	}
	q.VerdictWithMark(p.ID, Accept, p.Mark&^h.mask|mark)
}
