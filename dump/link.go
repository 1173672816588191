package dump

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gopacket/gopacket/layers"
)

// errLinkType reports a link type stripLink does not know.
var errLinkType = errors.New("link type not supported")

// stripLink returns the IP packet inside frame, a frame of link type lt.
func stripLink(lt layers.LinkType, frame []byte) ([]byte, error) {
	switch lt {
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6, 12, 14: // 12, 14: raw IP on some BSDs
		return frame, nil
	case layers.LinkTypeEthernet:
		return stripEthernet(frame)
	case layers.LinkTypeLinuxSLL:
		if len(frame) < 16 {
			return nil, fmt.Errorf("linux sll: header truncated: have %d of 16 bytes", len(frame))
		}
		return ipByEtherType("linux sll", binary.BigEndian.Uint16(frame[14:16]), frame[16:])
	case layers.LinkTypeLinuxSLL2:
		if len(frame) < 20 {
			return nil, fmt.Errorf("linux sll2: header truncated: have %d of 20 bytes", len(frame))
		}
		return ipByEtherType("linux sll2", binary.BigEndian.Uint16(frame[0:2]), frame[20:])
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		// A 4-byte address family whose byte order and values differ
		// between systems; the IP version nibble is the reliable part.
		if len(frame) < 4 {
			return nil, fmt.Errorf("loopback: header truncated: have %d of 4 bytes", len(frame))
		}
		ip := frame[4:]
		if len(ip) == 0 || (ip[0]>>4 != 4 && ip[0]>>4 != 6) {
			return nil, fmt.Errorf("loopback: family %x is not IP", frame[:4])
		}
		return ip, nil
	}
	return nil, fmt.Errorf("%w: %v (%d)", errLinkType, lt, uint32(lt))
}

func stripEthernet(frame []byte) ([]byte, error) {
	if len(frame) < 14 {
		return nil, fmt.Errorf("ethernet: header truncated: have %d of 14 bytes", len(frame))
	}
	et := binary.BigEndian.Uint16(frame[12:14])
	b := frame[14:]
	for et == 0x8100 || et == 0x88a8 || et == 0x9100 { // VLAN tags
		if len(b) < 4 {
			return nil, fmt.Errorf("ethernet: vlan tag truncated: have %d of 4 bytes", len(b))
		}
		et = binary.BigEndian.Uint16(b[2:4])
		b = b[4:]
	}
	return ipByEtherType("ethernet", et, b)
}

func ipByEtherType(link string, et uint16, b []byte) ([]byte, error) {
	if et != 0x0800 && et != 0x86dd {
		return nil, fmt.Errorf("%s: ethertype 0x%04x is not IP", link, et)
	}
	return b, nil
}
