package protocol

import (
	"net/netip"
	"strconv"
)

// maxNameLen is the longest host name falg routes on (RFC 1035, without the
// trailing dot).
const maxNameLen = 253

// nameBufLen is enough for "[" + IPv6 + "]:" + port, or a host name and port.
const nameBufLen = maxNameLen + 7

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// appendHostName appends the canonical form of the host name b to dst:
// lowercase, one trailing dot stripped. It accepts letters, digits, '-', '_'
// and '.', labels of 1 to 63 bytes and at most 253 bytes in all, and reports
// false for anything else.
func appendHostName(dst, b []byte) ([]byte, bool) {
	if n := len(b); n > 1 && b[n-1] == '.' {
		b = b[:n-1]
	}
	if len(b) == 0 || len(b) > maxNameLen {
		return dst, false
	}
	label := 0
	for _, c := range b {
		switch {
		case c == '.':
			if label == 0 {
				return dst, false
			}
			label = 0
			dst = append(dst, c)
			continue
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		default:
			return dst, false
		}
		label++
		if label > 63 {
			return dst, false
		}
		dst = append(dst, c)
	}
	if label == 0 {
		return dst, false
	}
	return dst, true
}

// parsePort parses a decimal TCP port 1..65535 (leading zeros allowed).
func parsePort(b []byte) (uint16, bool) {
	if len(b) == 0 || len(b) > 5 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n == 0 || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// parseIPv6Literal parses the inside of "[...]". Zones are refused.
func parseIPv6Literal(b []byte) (netip.Addr, bool) {
	if len(b) < 2 || len(b) > 45 {
		return netip.Addr{}, false
	}
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || c == ':' || c == '.') {
			return netip.Addr{}, false
		}
	}
	a, err := netip.ParseAddr(string(b))
	if err != nil || !a.Is6() {
		return netip.Addr{}, false
	}
	return a, true
}

// splitHostPort splits "host:port" or "[v6]:port". host excludes brackets;
// v6 reports a bracketed literal. hasPort is false when there is no ":port".
func splitHostPort(b []byte) (host, port []byte, v6, hasPort, ok bool) {
	if len(b) > 0 && b[0] == '[' {
		end := -1
		for i, c := range b {
			if c == ']' {
				end = i
				break
			}
		}
		if end < 0 {
			return nil, nil, false, false, false
		}
		host, rest := b[1:end], b[end+1:]
		if len(rest) == 0 {
			return host, nil, true, false, true
		}
		if rest[0] != ':' {
			return nil, nil, false, false, false
		}
		return host, rest[1:], true, true, true
	}
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ':' {
			return b[:i], b[i+1:], false, true, true
		}
	}
	return b, nil, false, false, true
}

// appendHostPort appends the canonical "host:port" (IPv6 as "[addr]:port")
// for the authority b, which must carry a port 1..65535.
func appendHostPort(dst, b []byte) ([]byte, bool) {
	host, port, v6, hasPort, ok := splitHostPort(b)
	if !ok || !hasPort {
		return dst, false
	}
	p, ok := parsePort(port)
	if !ok {
		return dst, false
	}
	if v6 {
		a, ok := parseIPv6Literal(host)
		if !ok {
			return dst, false
		}
		dst = append(dst, '[')
		dst = a.AppendTo(dst)
		dst = append(dst, ']', ':')
	} else {
		var ok bool
		if dst, ok = appendHostName(dst, host); !ok {
			return dst, false
		}
		dst = append(dst, ':')
	}
	return strconv.AppendUint(dst, uint64(p), 10), true
}

// appendAddrPort appends "a.b.c.d:port" or "[v6]:port" without allocating.
func appendAddrPort(dst []byte, a netip.Addr, port uint16) []byte {
	if a.Is6() {
		dst = append(dst, '[')
		dst = a.AppendTo(dst)
		dst = append(dst, ']')
	} else {
		dst = a.AppendTo(dst)
	}
	dst = append(dst, ':')
	return strconv.AppendUint(dst, uint64(port), 10)
}

func appendUint16(dst []byte, v uint16) []byte {
	return strconv.AppendUint(dst, uint64(v), 10)
}
