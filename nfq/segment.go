package nfq

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// TCP flags.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
)

// segment is the part of a queued packet the engine reads. Payload aliases
// the packet's buffer.
type segment struct {
	proto    uint8 // 6 or 17
	src, dst netip.AddrPort
	seq, ack uint32
	flags    uint8
	window   uint16
	opts     tcpOptions
	payload  []byte
}

// tcpOptions are the TCP options falg reads and writes: those of a SYN,
// and the timestamps of any segment.
type tcpOptions struct {
	mss      uint16 // 0: none
	wscale   int8   // -1: none
	sackPerm bool
	ts       bool // a timestamps option: tsVal, tsEcr
	tsVal    uint32
	tsEcr    uint32
}

var (
	errShort   = errors.New("truncated packet")
	errVersion = errors.New("not IPv4 or IPv6")
	errProto   = errors.New("not TCP or UDP")
	errFrag    = errors.New("fragment")
)

// parseSegment decodes an IPv4 or IPv6 packet carrying TCP or UDP without
// allocating. IPv6 extension headers are not followed: falg's rules only
// queue packets whose next header is TCP or UDP.
func parseSegment(b []byte, s *segment) error {
	if len(b) < 1 {
		return errShort
	}
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return errShort
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < 20 || total < ihl || len(b) < total {
			return errShort
		}
		if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 {
			return errFrag
		}
		s.proto = b[9]
		src := netip.AddrFrom4([4]byte(b[12:16]))
		dst := netip.AddrFrom4([4]byte(b[16:20]))
		l4 = b[ihl:total]
		s.src, s.dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	case 6:
		if len(b) < 40 {
			return errShort
		}
		plen := int(binary.BigEndian.Uint16(b[4:6]))
		if len(b) < 40+plen {
			return errShort
		}
		s.proto = b[6]
		src := netip.AddrFrom16([16]byte(b[8:24]))
		dst := netip.AddrFrom16([16]byte(b[24:40]))
		l4 = b[40 : 40+plen]
		s.src, s.dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	default:
		return errVersion
	}
	switch s.proto {
	case 6:
		return parseTCP(l4, s)
	case 17:
		if len(l4) < 8 {
			return errShort
		}
		s.src = netip.AddrPortFrom(s.src.Addr(), binary.BigEndian.Uint16(l4[0:2]))
		s.dst = netip.AddrPortFrom(s.dst.Addr(), binary.BigEndian.Uint16(l4[2:4]))
		s.payload = l4[8:]
		return nil
	}
	return errProto
}

func parseTCP(b []byte, s *segment) error {
	if len(b) < 20 {
		return errShort
	}
	off := int(b[12]>>4) * 4
	if off < 20 || off > len(b) {
		return errShort
	}
	s.src = netip.AddrPortFrom(s.src.Addr(), binary.BigEndian.Uint16(b[0:2]))
	s.dst = netip.AddrPortFrom(s.dst.Addr(), binary.BigEndian.Uint16(b[2:4]))
	s.seq = binary.BigEndian.Uint32(b[4:8])
	s.ack = binary.BigEndian.Uint32(b[8:12])
	s.flags = b[13]
	s.window = binary.BigEndian.Uint16(b[14:16])
	s.payload = b[off:]
	s.opts = tcpOptions{wscale: -1}
	if off > 20 {
		parseOptions(b[20:off], &s.opts)
	}
	return nil
}

func parseOptions(o []byte, t *tcpOptions) {
	for len(o) > 0 {
		switch kind := o[0]; kind {
		case 0: // end of list
			return
		case 1: // no-op
			o = o[1:]
			continue
		}
		if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
			return
		}
		kind, body := o[0], o[2:o[1]]
		switch {
		case kind == 2 && len(body) == 2:
			t.mss = binary.BigEndian.Uint16(body)
		case kind == 3 && len(body) == 1:
			t.wscale = int8(min(body[0], 14))
		case kind == 4 && len(body) == 0:
			t.sackPerm = true
		case kind == 8 && len(body) == 8:
			t.ts, t.tsVal, t.tsEcr = true, binary.BigEndian.Uint32(body), binary.BigEndian.Uint32(body[4:])
		}
		o = o[o[1]:]
	}
}

// seqLess reports whether sequence number a is before b, modulo 2^32.
func seqLess(a, b uint32) bool { return int32(a-b) < 0 }
