package nfq

import (
	"encoding/binary"
	"net/netip"
)

// udpHeaderLen is the length of a UDP header.
const udpHeaderLen = 8

// appendUDP appends to b an IPv4 or IPv6 packet (by the family of src,
// which dst must share) carrying payload in a UDP datagram from src to dst,
// with its lengths and checksums filled in. It does not allocate when b has
// room for the headers and payload.
func appendUDP(b []byte, src, dst netip.AddrPort, payload []byte) []byte {
	ulen := udpHeaderLen + len(payload)
	start := len(b)
	var ipLen int
	if src.Addr().Is4() {
		ipLen = 20
		b = append(b,
			0x45, 0, // version 4, IHL 5; TOS 0
			byte((ipLen+ulen)>>8), byte(ipLen+ulen),
			0, 0, 0, 0, // ID 0, no flags, offset 0
			64, 17, // TTL, protocol UDP
			0, 0) // checksum, below
		s, d := src.Addr().As4(), dst.Addr().As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
		binary.BigEndian.PutUint16(b[start+10:], ^fold(sum(b[start:start+ipLen], 0)))
	} else {
		ipLen = 40
		b = append(b,
			0x60, 0, 0, 0, // version 6, traffic class and flow label 0
			byte(ulen>>8), byte(ulen),
			17, 64) // next header UDP, hop limit
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	u := len(b)
	b = append(b,
		byte(src.Port()>>8), byte(src.Port()),
		byte(dst.Port()>>8), byte(dst.Port()),
		byte(ulen>>8), byte(ulen),
		0, 0) // checksum, below
	b = append(b, payload...)
	// The pseudo-header: addresses, protocol, UDP length.
	var c uint32
	if ipLen == 20 {
		c = sum(b[start+12:start+20], 0)
	} else {
		c = sum(b[start+8:start+40], 0)
	}
	c += 17 + uint32(ulen)
	ck := ^fold(sum(b[u:], c))
	if ck == 0 {
		ck = 0xffff // a computed zero is sent as all ones (RFC 768)
	}
	binary.BigEndian.PutUint16(b[u+6:], ck)
	return b
}

// sum adds b to the one's complement sum c as 16-bit big-endian words.
func sum(b []byte, c uint32) uint32 {
	for len(b) >= 2 {
		c += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		c += uint32(b[0]) << 8
	}
	return c
}

// fold reduces a one's complement sum to 16 bits.
func fold(c uint32) uint16 {
	for c > 0xffff {
		c = c>>16 + c&0xffff
	}
	return uint16(c)
}
