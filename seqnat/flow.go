package seqnat

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// DefaultTimeout is the conntrack timeout, in seconds, Create uses when
// Flow.Timeout is zero. The kernel replaces it with its per-state timeout at
// the first packet of the flow.
const DefaultTimeout = 120

// Tuple is one direction of a conntrack entry: source and destination.
type Tuple struct {
	Src, Dst netip.AddrPort
}

// String formats t as "src->dst".
func (t Tuple) String() string { return t.Src.String() + "->" + t.Dst.String() }

// Inverse returns t with source and destination swapped.
func (t Tuple) Inverse() Tuple { return Tuple{Src: t.Dst, Dst: t.Src} }

// TCPInfo is the TCP tracking state of an entry. Create always sends state
// ESTABLISHED and TCPFlagsDefault in both directions; State and the flags
// are filled in by Get, List and events.
type TCPInfo struct {
	State       uint8 // TCPState*
	WScaleOrig  uint8 // client's window scale shift
	WScaleReply uint8 // backend's window scale shift
	FlagsOrig   uint8 // TCPFlag* (decoded only)
	FlagsReply  uint8 // TCPFlag* (decoded only)
}

// Flow is a conntrack entry for Create: the connection as the client sees it
// plus the NAT and sequence adjustment the kernel applies from then on.
type Flow struct {
	Proto   uint8          // unix.IPPROTO_TCP or unix.IPPROTO_UDP
	Orig    Tuple          // client -> address asked, as the client sees it
	NATDst  netip.AddrPort // backend; zero = no DNAT; port 0 = keep the port
	NATSrc  netip.AddrPort // router addr:port the backend sees; zero = no SNAT; port 0 = kernel picks
	Mark    uint32         // CTA_MARK
	Timeout uint32         // seconds; 0 = DefaultTimeout
	Zone    uint16         // conntrack zone; 0 = default zone
	TCP     *TCPInfo       // TCP only; nil = window scale 0 both ways

	SeqAdjOrig, SeqAdjReply *SeqAdj // TCP only; nil = none
}

// String formats f for logs and errors.
func (f Flow) String() string {
	return fmt.Sprintf("%s %s", protoName(f.Proto), f.Orig)
}

// Counters are one direction's accounting counters. The kernel reports them
// only when net.netfilter.nf_conntrack_acct is on.
type Counters struct {
	Packets, Bytes uint64
}

// Entry is a conntrack entry as the kernel reports it.
type Entry struct {
	Proto   uint8
	Orig    Tuple // as the client sent it
	Reply   Tuple // as the kernel expects the answer: after NAT, backend -> router or client
	Zone    uint16
	Mark    uint32
	Status  uint32 // Status* bits
	Timeout uint32 // seconds left
	ID      uint32
	Use     uint32
	TCP     *TCPInfo

	CountersOrig, CountersReply Counters
	SeqAdjOrig, SeqAdjReply     *SeqAdj
}

// errInvalid marks flows Create refuses before talking to the kernel.
var errInvalid = errors.New("invalid flow")

// family returns the address family of the tuple, or an error when its
// addresses are invalid or of mixed families.
func tupleFamily(t Tuple) (uint8, error) {
	s, d := t.Src.Addr().Unmap(), t.Dst.Addr().Unmap()
	if !s.IsValid() || !d.IsValid() {
		return 0, fmt.Errorf("%w: tuple %s: missing address", errInvalid, t)
	}
	if s.Is4() != d.Is4() {
		return 0, fmt.Errorf("%w: tuple %s: mixed address families", errInvalid, t)
	}
	if s.Is4() {
		return unix.AF_INET, nil
	}
	return unix.AF_INET6, nil
}

// validate checks f and returns its address family.
func (f *Flow) validate() (uint8, error) {
	if f.Proto != unix.IPPROTO_TCP && f.Proto != unix.IPPROTO_UDP {
		return 0, fmt.Errorf("%w: protocol %d: want TCP or UDP", errInvalid, f.Proto)
	}
	fam, err := tupleFamily(f.Orig)
	if err != nil {
		return 0, err
	}
	for _, ap := range []netip.AddrPort{f.NATDst, f.NATSrc} {
		if !ap.Addr().IsValid() {
			continue
		}
		if ap.Addr().Unmap().Is4() != (fam == unix.AF_INET) {
			return 0, fmt.Errorf("%w: NAT address %s: family differs from %s", errInvalid, ap, f.Orig)
		}
	}
	if f.Proto != unix.IPPROTO_TCP && (f.TCP != nil || f.SeqAdjOrig != nil || f.SeqAdjReply != nil) {
		return 0, fmt.Errorf("%w: TCP state or seqadj on a %s flow", errInvalid, protoName(f.Proto))
	}
	return fam, nil
}

func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	}
	return fmt.Sprintf("proto-%d", p)
}
