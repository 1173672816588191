package protocol

import "fmt"

// httpParser routes on the Host of an HTTP/1.x request (or the authority of
// an absolute-form target, which takes precedence as RFC 9112 3.2.2 says).
// It decides once the whole request head has arrived; a request without a
// Host (or with an empty one) is Decided with Name "" (the default route).
type httpParser struct {
	max  int
	name [nameBufLen]byte
}

func (p *httpParser) Feed(stream []byte) Decision {
	h, v, err := parseHead(stream, p.max, "http")
	if v != Decided {
		return Decision{Verdict: v, Err: err}
	}
	var host []byte
	seen := false
	for rest := h.headers; ; {
		name, value, r, ok := nextHeader(rest)
		if !ok {
			break
		}
		rest = r
		if equalFold(name, "host") {
			if seen {
				return Decision{Verdict: Malformed, Err: fmt.Errorf("protocol: http: several Host headers: %w", ErrSyntax)}
			}
			seen, host = true, value
		}
	}
	if auth, ok := absoluteAuthority(h.target); ok {
		host = auth
	}
	if len(host) == 0 {
		return Decision{Verdict: Decided}
	}
	name, err := appendHostOnly(p.name[:0], host)
	if err != nil {
		return Decision{Verdict: Malformed, Err: err}
	}
	return Decision{Verdict: Decided, Name: string(name)}
}

func (p *httpParser) Reply(Outcome) []byte { return nil }
func (p *httpParser) Reset()               {}

// absoluteAuthority returns the authority of an "http://" or "https://"
// target, without userinfo.
func absoluteAuthority(t []byte) ([]byte, bool) {
	var rest []byte
	switch {
	case len(t) >= 7 && equalFold(t[:7], "http://"):
		rest = t[7:]
	case len(t) >= 8 && equalFold(t[:8], "https://"):
		rest = t[8:]
	default:
		return nil, false
	}
	for i, c := range rest {
		if c == '/' || c == '?' || c == '#' {
			rest = rest[:i]
			break
		}
	}
	for i := len(rest) - 1; i >= 0; i-- {
		if rest[i] == '@' {
			rest = rest[i+1:]
			break
		}
	}
	return rest, true
}

// appendHostOnly appends the canonical host of a Host value "host[:port]":
// a lowercase name, or an IPv6 address without brackets.
func appendHostOnly(dst, b []byte) ([]byte, error) {
	host, port, v6, hasPort, ok := splitHostPort(b)
	if ok && hasPort {
		for _, c := range port {
			if c < '0' || c > '9' {
				ok = false
			}
		}
		if len(port) > 5 {
			ok = false
		}
	}
	if ok && v6 {
		a, ok6 := parseIPv6Literal(host)
		if ok6 {
			return a.AppendTo(dst), nil
		}
		ok = false
	}
	if ok {
		if dst, ok = appendHostName(dst, host); ok {
			return dst, nil
		}
	}
	return dst, fmt.Errorf("protocol: http: host %q: %w", b, ErrBadName)
}
