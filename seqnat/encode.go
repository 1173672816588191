package seqnat

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

const (
	nlaHeaderLen = 4
	nlaFNested   = 0x8000 // NLA_F_NESTED
)

// encoder builds one netlink message in a reusable buffer: a struct
// nlmsghdr, a struct nfgenmsg and attributes. Headers are native endian;
// ctnetlink values are big endian.
type encoder struct {
	b []byte
}

// reset starts a new message for family, leaving room for the nlmsghdr.
func (e *encoder) reset(family uint8) {
	e.b = append(e.b[:0], make([]byte, unix.NLMSG_HDRLEN)...)
	e.b = append(e.b, family, nfnetlinkV0, 0, 0) // struct nfgenmsg, res_id 0
}

// body returns the nfgenmsg and attributes.
func (e *encoder) body() []byte { return e.b[unix.NLMSG_HDRLEN:] }

// finish fills in the nlmsghdr and returns the whole message. The kernel
// fills in the port ID.
func (e *encoder) finish(typ, flags uint16, seq uint32) []byte {
	binary.NativeEndian.PutUint32(e.b[0:], uint32(len(e.b)))
	binary.NativeEndian.PutUint16(e.b[4:], typ)
	binary.NativeEndian.PutUint16(e.b[6:], flags)
	binary.NativeEndian.PutUint32(e.b[8:], seq)
	binary.NativeEndian.PutUint32(e.b[12:], 0)
	return e.b
}

// attr appends an attribute header and n zeroed, padded data bytes and
// returns the data.
func (e *encoder) attr(typ uint16, n int) []byte {
	start := len(e.b)
	total := nlaHeaderLen + n
	padded := (total + 3) &^ 3
	e.b = append(e.b, make([]byte, padded)...)
	binary.NativeEndian.PutUint16(e.b[start:], uint16(total))
	binary.NativeEndian.PutUint16(e.b[start+2:], typ)
	return e.b[start+nlaHeaderLen : start+total]
}

func (e *encoder) u8(typ uint16, v uint8)     { e.attr(typ, 1)[0] = v }
func (e *encoder) be16(typ uint16, v uint16)  { binary.BigEndian.PutUint16(e.attr(typ, 2), v) }
func (e *encoder) be32(typ uint16, v uint32)  { binary.BigEndian.PutUint32(e.attr(typ, 4), v) }
func (e *encoder) bytes(typ uint16, v []byte) { copy(e.attr(typ, len(v)), v) }

// begin opens a nested attribute; end closes it.
func (e *encoder) begin(typ uint16) int {
	start := len(e.b)
	e.attr(typ|nlaFNested, 0)
	return start
}

func (e *encoder) end(start int) {
	binary.NativeEndian.PutUint16(e.b[start:], uint16(len(e.b)-start))
}

// addr appends a as a 4- or 16-byte attribute.
func (e *encoder) addr(typ uint16, a netip.Addr) {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		e.bytes(typ, b[:])
		return
	}
	b := a.As16()
	e.bytes(typ, b[:])
}

// tuple appends a CTA_TUPLE_* nest.
func (e *encoder) tuple(typ uint16, proto uint8, t Tuple) {
	n := e.begin(typ)
	ip := e.begin(ctaTupleIP)
	if t.Src.Addr().Unmap().Is4() {
		e.addr(ctaIPv4Src, t.Src.Addr())
		e.addr(ctaIPv4Dst, t.Dst.Addr())
	} else {
		e.addr(ctaIPv6Src, t.Src.Addr())
		e.addr(ctaIPv6Dst, t.Dst.Addr())
	}
	e.end(ip)
	p := e.begin(ctaTupleProto)
	e.u8(ctaProtoNum, proto)
	e.be16(ctaProtoSrcPort, t.Src.Port())
	e.be16(ctaProtoDstPort, t.Dst.Port())
	e.end(p)
	e.end(n)
}

// nat appends a CTA_NAT_SRC or CTA_NAT_DST nest mapping to exactly ap.
func (e *encoder) nat(typ uint16, ap netip.AddrPort) {
	n := e.begin(typ)
	if ap.Addr().Unmap().Is4() {
		e.addr(ctaNATv4MinIP, ap.Addr())
		e.addr(ctaNATv4MaxIP, ap.Addr())
	} else {
		e.addr(ctaNATv6MinIP, ap.Addr())
		e.addr(ctaNATv6MaxIP, ap.Addr())
	}
	if ap.Port() != 0 {
		p := e.begin(ctaNATProto)
		e.be16(ctaProtoNATPortMin, ap.Port())
		e.be16(ctaProtoNATPortMax, ap.Port())
		e.end(p)
	}
	e.end(n)
}

func (e *encoder) seqAdj(typ uint16, s SeqAdj) {
	n := e.begin(typ)
	e.be32(ctaSeqAdjCorrectionPos, s.CorrectionPos)
	e.be32(ctaSeqAdjOffsetBefore, s.OffsetBefore)
	e.be32(ctaSeqAdjOffsetAfter, s.OffsetAfter)
	e.end(n)
}

func (e *encoder) tcpInfo(t *TCPInfo) {
	var ws0, ws1 uint8
	if t != nil {
		ws0, ws1 = t.WScaleOrig, t.WScaleReply
	}
	n := e.begin(ctaProtoinfo)
	tcp := e.begin(ctaProtoinfoTCP)
	e.u8(ctaTCPState, TCPStateEstablished)
	e.u8(ctaTCPWScaleOrig, ws0)
	e.u8(ctaTCPWScaleReply, ws1)
	// struct nf_ct_tcp_flags { __u8 flags; __u8 mask; }
	copy(e.attr(ctaTCPFlagsOrig, 2), []byte{TCPFlagsDefault, TCPFlagsDefault})
	copy(e.attr(ctaTCPFlagsReply, 2), []byte{TCPFlagsDefault, TCPFlagsDefault})
	e.end(tcp)
	e.end(n)
}

// create encodes the IPCTNL_MSG_CT_NEW body for f, which must be valid.
func (e *encoder) create(f *Flow, family uint8) {
	e.reset(family)
	e.tuple(ctaTupleOrig, f.Proto, f.Orig)
	// The kernel derives the real reply tuple from the NAT setup; it only
	// needs a well-formed one here.
	e.tuple(ctaTupleReply, f.Proto, f.Orig.Inverse())
	if f.Zone != 0 {
		e.be16(ctaZone, f.Zone)
	}
	e.be32(ctaStatus, createStatus)
	timeout := f.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	e.be32(ctaTimeout, timeout)
	e.be32(ctaMark, f.Mark)
	if f.Proto == unix.IPPROTO_TCP {
		e.tcpInfo(f.TCP)
	}
	if f.NATDst.Addr().IsValid() {
		e.nat(ctaNATDst, f.NATDst)
	}
	if f.NATSrc.Addr().IsValid() {
		e.nat(ctaNATSrc, f.NATSrc)
	}
	if f.SeqAdjOrig != nil {
		e.seqAdj(ctaSeqAdjOrig, *f.SeqAdjOrig)
	}
	if f.SeqAdjReply != nil {
		e.seqAdj(ctaSeqAdjReply, *f.SeqAdjReply)
	}
}

// key encodes the body of a GET or DELETE for one entry.
func (e *encoder) key(family uint8, zone uint16, proto uint8, orig Tuple) {
	e.reset(family)
	e.tuple(ctaTupleOrig, proto, orig)
	if zone != 0 {
		e.be16(ctaZone, zone)
	}
}

// dump encodes the body of a GET dump filtered by mark.
func (e *encoder) dump(mark, mask uint32) {
	e.reset(unix.AF_UNSPEC)
	e.be32(ctaMark, mark)
	e.be32(ctaMarkMask, mask)
}
