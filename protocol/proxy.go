package protocol

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// ErrNoProxyHeader reports a stream that does not start with a PROXY
// protocol header.
var ErrNoProxyHeader = errors.New("no PROXY protocol header")

const (
	proxyV1Prefix = "PROXY "
	proxyV1Max    = 107 // longest v1 line including CRLF
	proxyV2Sig    = "\r\n\r\n\x00\r\nQUIT\n"
	proxyV2Len    = 16 // signature, ver_cmd, fam, len
)

// ProxyHeader is a parsed PROXY protocol header (haproxy's proxy-protocol
// spec, versions 1 and 2).
type ProxyHeader struct {
	// Version is 1 or 2.
	Version int
	// Local is set for a v2 LOCAL command, a v1 UNKNOWN line, and a v2
	// header whose addresses are not IP (unspecified or unix): the
	// connection's own addresses apply and Src and Dst are zero.
	Local bool
	// UDP is set when a v2 header declares a datagram transport.
	UDP bool
	// Src and Dst are the original client and destination.
	Src, Dst netip.AddrPort
}

// ParseProxyHeader parses the PROXY protocol header at the start of b. n is
// the header's length. It answers NeedMore for a valid prefix, Decided, or
// Malformed (including for a stream without a header). v2 TLVs are skipped.
func ParseProxyHeader(b []byte) (h ProxyHeader, n int, v Verdict, err error) {
	if len(b) == 0 {
		return h, 0, NeedMore, nil
	}
	switch b[0] {
	case 'P':
		return parseProxyV1(b)
	case '\r':
		return parseProxyV2(b)
	}
	return h, 0, Malformed, fmt.Errorf("protocol: proxy: first byte %#02x: %w", b[0], ErrNoProxyHeader)
}

func proxyErr(format string, args ...any) (ProxyHeader, int, Verdict, error) {
	return ProxyHeader{}, 0, Malformed, fmt.Errorf("protocol: proxy: "+format, args...)
}

func parseProxyV1(b []byte) (h ProxyHeader, n int, v Verdict, err error) {
	k := min(len(b), len(proxyV1Prefix))
	if string(b[:k]) != proxyV1Prefix[:k] {
		return proxyErr("v1 prefix %q: %w", b[:k], ErrNoProxyHeader)
	}
	end := -1
	for i, c := range b[:min(len(b), proxyV1Max)] {
		if c == '\n' {
			end = i
			break
		}
	}
	if end < 0 {
		if len(b) >= proxyV1Max {
			return proxyErr("v1 line longer than %d bytes: %w", proxyV1Max, ErrTooLarge)
		}
		return h, 0, NeedMore, nil
	}
	if end < 1 || b[end-1] != '\r' {
		return proxyErr("v1 line does not end in CRLF: %w", ErrSyntax)
	}
	n = end + 1
	var f [6][]byte
	nf := 0
	rest := b[len(proxyV1Prefix) : end-1]
	for nf < len(f) {
		i := 0
		for i < len(rest) && rest[i] != ' ' {
			i++
		}
		f[nf] = rest[:i]
		nf++
		if i == len(rest) {
			rest = nil
			break
		}
		rest = rest[i+1:]
	}
	h.Version = 1
	if string(f[0]) == "UNKNOWN" {
		h.Local = true
		return h, n, Decided, nil
	}
	if nf != 5 || rest != nil {
		return proxyErr("v1 line %q does not have 5 fields: %w", b[:end-1], ErrSyntax)
	}
	var want6 bool
	switch string(f[0]) {
	case "TCP4":
	case "TCP6":
		want6 = true
	default:
		return proxyErr("v1 protocol %q: %w", f[0], ErrSyntax)
	}
	src, ok1 := parseV1Addr(f[1], f[3], want6)
	dst, ok2 := parseV1Addr(f[2], f[4], want6)
	if !ok1 || !ok2 {
		return proxyErr("v1 addresses in %q: %w", b[:end-1], ErrSyntax)
	}
	h.Src, h.Dst = src, dst
	return h, n, Decided, nil
}

func parseV1Addr(ip, port []byte, want6 bool) (netip.AddrPort, bool) {
	if len(ip) == 0 || len(ip) > 39 || len(port) == 0 || len(port) > 5 {
		return netip.AddrPort{}, false
	}
	a, err := netip.ParseAddr(string(ip))
	if err != nil || a.Is6() != want6 || a.Zone() != "" {
		return netip.AddrPort{}, false
	}
	p := 0
	for _, c := range port {
		if c < '0' || c > '9' {
			return netip.AddrPort{}, false
		}
		p = p*10 + int(c-'0')
	}
	if p > 65535 || (len(port) > 1 && port[0] == '0') {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a, uint16(p)), true
}

func parseProxyV2(b []byte) (h ProxyHeader, n int, v Verdict, err error) {
	k := min(len(b), len(proxyV2Sig))
	if string(b[:k]) != proxyV2Sig[:k] {
		return proxyErr("v2 signature: %w", ErrNoProxyHeader)
	}
	if len(b) > 12 && b[12]>>4 != 2 {
		return proxyErr("v2 version %d: %w", b[12]>>4, ErrSyntax)
	}
	if len(b) < proxyV2Len {
		return h, 0, NeedMore, nil
	}
	cmd, fam, l := b[12]&0xf, b[13], be16(b[14:])
	n = proxyV2Len + l
	if n > MaxFirstBytes {
		return proxyErr("v2 header of %d bytes: %w", n, ErrTooLarge)
	}
	if cmd > 1 {
		return proxyErr("v2 command %d: %w", cmd, ErrSyntax)
	}
	var alen int
	switch fam >> 4 {
	case 0: // AF_UNSPEC
	case 1:
		alen = 12
	case 2:
		alen = 36
	case 3:
		alen = 216
	default:
		return proxyErr("v2 address family %d: %w", fam>>4, ErrSyntax)
	}
	if fam&0xf > 2 {
		return proxyErr("v2 transport %d: %w", fam&0xf, ErrSyntax)
	}
	if l < alen {
		return proxyErr("v2 length %d below address length %d: %w", l, alen, ErrSyntax)
	}
	if len(b) < n {
		return h, 0, NeedMore, nil
	}
	h.Version = 2
	h.UDP = fam&0xf == 2
	a := b[proxyV2Len:]
	switch {
	case cmd == 0 || alen == 0 || alen == 216:
		h.Local = true
	case alen == 12:
		h.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), uint16(be16(a[8:])))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), uint16(be16(a[10:])))
	default:
		h.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])), uint16(be16(a[32:])))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])), uint16(be16(a[34:])))
	}
	return h, n, Decided, nil
}

// proxyFamily returns src and dst in one family: both IPv4 (4-in-6 mapped
// addresses unmapped) or both IPv6 (IPv4 mapped). ok is false when either is
// invalid or zoned.
func proxyFamily(src, dst netip.AddrPort) (s, d netip.Addr, v6, ok bool) {
	s, d = src.Addr().Unmap(), dst.Addr().Unmap()
	if !s.IsValid() || !d.IsValid() || s.Zone() != "" || d.Zone() != "" {
		return s, d, false, false
	}
	if s.Is4() && d.Is4() {
		return s, d, false, true
	}
	if s.Is4() {
		s = netip.AddrFrom16(s.As16())
	}
	if d.Is4() {
		d = netip.AddrFrom16(d.As16())
	}
	return s, d, true, true
}

// AppendProxyV1 appends a PROXY v1 line for a TCP connection from src to
// dst, or "PROXY UNKNOWN\r\n" when either address is invalid.
func AppendProxyV1(b []byte, src, dst netip.AddrPort) []byte {
	s, d, v6, ok := proxyFamily(src, dst)
	if !ok {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	if v6 {
		b = append(b, "PROXY TCP6 "...)
	} else {
		b = append(b, "PROXY TCP4 "...)
	}
	b = s.AppendTo(b)
	b = append(b, ' ')
	b = d.AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, '\r', '\n')
}

// AppendProxyV2 appends a PROXY v2 header (command PROXY, transport STREAM,
// no TLVs) for a TCP connection from src to dst, or a LOCAL header when
// either address is invalid.
func AppendProxyV2(b []byte, src, dst netip.AddrPort) []byte {
	b = append(b, proxyV2Sig...)
	s, d, v6, ok := proxyFamily(src, dst)
	switch {
	case !ok:
		return append(b, 0x20, 0x00, 0, 0)
	case v6:
		b = append(b, 0x21, 0x21, 0, 36)
		s16, d16 := s.As16(), d.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	default:
		b = append(b, 0x21, 0x11, 0, 12)
		s4, d4 := s.As4(), d.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	}
	return append(b, byte(src.Port()>>8), byte(src.Port()), byte(dst.Port()>>8), byte(dst.Port()))
}
