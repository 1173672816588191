package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Decode fills l from data, which starts at an IPv4 or IPv6 header. It
// resets l first (keeping the capacity of l.Options) and never panics: a
// packet cut short or malformed yields an error naming the header and what
// is wrong, also stored in l.Err. Fields decoded before the error stay set.
func Decode(data []byte, l *Line) error {
	l.reset()
	l.Data = data
	if err := decodeIP(data, l); err != nil {
		l.Err = err
		return err
	}
	return nil
}

func decodeIP(data []byte, l *Line) error {
	if len(data) == 0 {
		return errors.New("ip: empty packet")
	}
	switch v := data[0] >> 4; v {
	case 4:
		return decodeIPv4(data, l)
	case 6:
		return decodeIPv6(data, l)
	default:
		return fmt.Errorf("ip: version %d is neither 4 nor 6", v)
	}
}

func decodeIPv4(data []byte, l *Line) error {
	if len(data) < 20 {
		return fmt.Errorf("ipv4: header truncated: have %d of 20 bytes", len(data))
	}
	hl := int(data[0]&0x0f) * 4
	if hl < 20 {
		return fmt.Errorf("ipv4: header length %d below 20", hl)
	}
	l.Version = 4
	l.Src = netip.AddrFrom4([4]byte(data[12:16]))
	l.Dst = netip.AddrFrom4([4]byte(data[16:20]))
	l.Proto = data[9]
	l.TTL = data[8]
	total := int(binary.BigEndian.Uint16(data[2:4]))
	if total == 0 {
		total = len(data) // segmentation offload: the kernel leaves it unset
	}
	l.IPLen = total
	if len(data) < hl {
		return fmt.Errorf("ipv4: header truncated: have %d of %d bytes", len(data), hl)
	}
	if total < hl {
		return fmt.Errorf("ipv4: total length %d below header length %d", total, hl)
	}
	frag := binary.BigEndian.Uint16(data[6:8])
	l.FragOff = int(frag&0x1fff) * 8
	l.MoreFrags = frag&0x2000 != 0
	return decodeL4(data[hl:min(total, len(data))], total-hl, l)
}

func decodeIPv6(data []byte, l *Line) error {
	if len(data) < 40 {
		return fmt.Errorf("ipv6: header truncated: have %d of 40 bytes", len(data))
	}
	l.Version = 6
	l.Src = netip.AddrFrom16([16]byte(data[8:24]))
	l.Dst = netip.AddrFrom16([16]byte(data[24:40]))
	l.TTL = data[7]
	plen := int(binary.BigEndian.Uint16(data[4:6]))
	if plen == 0 {
		plen = len(data) - 40 // jumbogram or segmentation offload
	}
	l.IPLen = 40 + plen
	next := layers.IPProtocol(data[6])
	l.Proto = uint8(next)
	b := data[40:min(40+plen, len(data))]
	var skip layers.IPv6ExtensionSkipper
	for {
		var n int
		switch next {
		case layers.IPProtocolIPv6HopByHop, layers.IPProtocolIPv6Routing,
			layers.IPProtocolIPv6Destination, 135, 139, 140: // mobility, HIP, shim6
			if err := skip.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
				return fmt.Errorf("ipv6: extension header %d: %w", next, err)
			}
			n = len(skip.Contents)
			next = skip.NextHeader
		case layers.IPProtocolIPv6Fragment:
			if len(b) < 8 {
				return fmt.Errorf("ipv6: fragment header truncated: have %d of 8 bytes", len(b))
			}
			off := binary.BigEndian.Uint16(b[2:4])
			l.FragOff = int(off>>3) * 8
			l.MoreFrags = off&1 != 0
			n = 8
			next = layers.IPProtocol(b[0])
		default:
			l.Proto = uint8(next)
			return decodeL4(b, plen, l)
		}
		b = b[n:]
		plen -= n
		l.Proto = uint8(next)
		if plen < 0 {
			return fmt.Errorf("ipv6: extension headers exceed payload length %d", l.IPLen-40)
		}
	}
}

// decodeL4 decodes the transport header in b, the captured part of an IP
// payload that claims to be n bytes long.
func decodeL4(b []byte, n int, l *Line) error {
	if l.FragOff != 0 {
		l.Len = n
		l.Payload = b
		return nil
	}
	switch l.Proto {
	case ProtoTCP:
		return decodeTCP(b, n, l)
	case ProtoUDP:
		return decodeUDP(b, n, l)
	case ProtoICMP, ProtoICMPv6:
		if len(b) < 4 {
			return fmt.Errorf("%s: header truncated: have %d of 4 bytes", strings.ToLower(protoName(l)), len(b))
		}
		l.ICMPType, l.ICMPCode = b[0], b[1]
		l.Len = n
		l.Payload = b
		return nil
	default:
		l.Len = n
		l.Payload = b
		return nil
	}
}

func decodeTCP(b []byte, n int, l *Line) error {
	if len(b) < 20 {
		return fmt.Errorf("tcp: header truncated: have %d of 20 bytes", len(b))
	}
	l.SrcPort = binary.BigEndian.Uint16(b[0:2])
	l.DstPort = binary.BigEndian.Uint16(b[2:4])
	l.Seq = binary.BigEndian.Uint32(b[4:8])
	l.Ack = binary.BigEndian.Uint32(b[8:12])
	l.Flags = b[13]
	l.Win = binary.BigEndian.Uint16(b[14:16])
	off := int(b[12]>>4) * 4
	if off < 20 {
		return fmt.Errorf("tcp: data offset %d below 20", off)
	}
	if len(b) < off {
		return fmt.Errorf("tcp: header truncated: have %d of %d bytes", len(b), off)
	}
	if n < off {
		return fmt.Errorf("tcp: data offset %d beyond segment length %d", off, n)
	}
	opts := b[20:off]
	for i := 0; i < len(opts); {
		kind := opts[i]
		if kind == 0 { // end of option list
			break
		}
		if kind == 1 { // no-operation
			i++
			continue
		}
		if i+1 >= len(opts) {
			return fmt.Errorf("tcp: option %d at offset %d: length byte missing", kind, 20+i)
		}
		size := int(opts[i+1])
		if size < 2 || i+size > len(opts) {
			return fmt.Errorf("tcp: option %d at offset %d: length %d does not fit %d option bytes", kind, 20+i, size, len(opts)-i)
		}
		l.Options = append(l.Options, TCPOption{Kind: kind, Data: opts[i+2 : i+size]})
		i += size
	}
	l.Len = n - off
	l.Payload = b[off:]
	return nil
}

func decodeUDP(b []byte, n int, l *Line) error {
	if len(b) < 8 {
		return fmt.Errorf("udp: header truncated: have %d of 8 bytes", len(b))
	}
	l.SrcPort = binary.BigEndian.Uint16(b[0:2])
	l.DstPort = binary.BigEndian.Uint16(b[2:4])
	size := int(binary.BigEndian.Uint16(b[4:6]))
	if size == 0 && n > 0xffff {
		size = n // IPv6 jumbogram
	}
	if size < 8 {
		return fmt.Errorf("udp: length %d below 8", size)
	}
	if size > n && !l.MoreFrags { // a first fragment carries the length of the whole datagram
		return fmt.Errorf("udp: length %d exceeds IP payload length %d", size, n)
	}
	l.Len = size - 8
	l.Payload = b[8:min(size, len(b))]
	return nil
}
