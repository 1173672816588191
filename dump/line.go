package dump

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// IP protocol numbers Decode understands.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// TCP flag bits as they appear in Line.Flags.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagPSH = 0x08
	FlagACK = 0x10
	FlagURG = 0x20
	FlagECE = 0x40
	FlagCWR = 0x80
)

// TCP option kinds Format names.
const (
	OptMSS       = 2
	OptWScale    = 3
	OptSACKPerm  = 4
	OptSACK      = 5
	OptTimestamp = 8
)

// Line is one decoded packet: the fields Format prints, plus what a Decider
// added. Slices alias the packet data.
type Line struct {
	// Time is when the packet was seen; Format prints it as 15:04:05.000000.
	Time time.Time
	// Hook is the netfilter hook of a live packet, empty otherwise.
	Hook string
	// Data is the whole packet from the IP header on.
	Data []byte

	// Version is the IP version, 4 or 6 (0 when not even that decoded).
	Version uint8
	// Src and Dst are the IP addresses.
	Src, Dst netip.Addr
	// Proto is the transport protocol after IPv6 extension headers.
	Proto uint8
	// TTL is the IPv4 TTL or the IPv6 hop limit.
	TTL uint8
	// IPLen is the packet length the IP header claims.
	IPLen int
	// FragOff is the fragment offset in bytes; MoreFrags the MF bit. A
	// packet with FragOff != 0 has no transport header.
	FragOff   int
	MoreFrags bool

	// SrcPort and DstPort are the TCP or UDP ports.
	SrcPort, DstPort uint16
	// Flags, Seq, Ack, Win and Options are the TCP header fields. Options
	// are in wire order without NOP and end-of-list.
	Flags    uint8
	Seq, Ack uint32
	Win      uint16
	Options  []TCPOption
	// ICMPType and ICMPCode are set for ICMP and ICMPv6.
	ICMPType, ICMPCode uint8

	// Len is the payload length the headers claim: bytes after the TCP or
	// UDP header, the ICMP message length, or the IP payload length for
	// other protocols.
	Len int
	// Payload is the captured part of that payload (it may be shorter
	// than Len when the capture was cut).
	Payload []byte

	// Name is the name or instruction falg parsed (set by a Decider).
	Name string
	// Decision is what falg would do: a backend address, reject, ... (set
	// by a Decider).
	Decision string
	// Note is any other remark a Decider adds.
	Note string

	// Err is the decode error; Format then writes an ERR line.
	Err error
}

// TCPOption is one TCP option. Data is its body without kind and length.
type TCPOption struct {
	Kind uint8
	Data []byte
}

// reset clears l but keeps the capacity of Options.
func (l *Line) reset() {
	opts := l.Options[:0]
	*l = Line{Options: opts}
}

// MSS returns the MSS option value, if present and well formed.
func (l *Line) MSS() (uint16, bool) {
	if o, ok := l.option(OptMSS, 2); ok {
		return binary.BigEndian.Uint16(o.Data), true
	}
	return 0, false
}

// WScale returns the window scale shift, if present and well formed.
func (l *Line) WScale() (uint8, bool) {
	if o, ok := l.option(OptWScale, 1); ok {
		return o.Data[0], true
	}
	return 0, false
}

// SACKPermitted reports whether the SACK-permitted option is present.
func (l *Line) SACKPermitted() bool {
	_, ok := l.option(OptSACKPerm, 0)
	return ok
}

// Timestamps returns TSval and TSecr, if the option is present and well
// formed.
func (l *Line) Timestamps() (val, ecr uint32, ok bool) {
	if o, ok := l.option(OptTimestamp, 8); ok {
		return binary.BigEndian.Uint32(o.Data), binary.BigEndian.Uint32(o.Data[4:]), true
	}
	return 0, 0, false
}

func (l *Line) option(kind uint8, size int) (TCPOption, bool) {
	for _, o := range l.Options {
		if o.Kind == kind && len(o.Data) == size {
			return o, true
		}
	}
	return TCPOption{}, false
}
