package protocol

import "fmt"

// httpHead is an HTTP/1.x request head: request line and header block.
type httpHead struct {
	method, target []byte
	minor          byte   // '0' or '1' of HTTP/1.x
	headers        []byte // header lines, without the blank line
	end            int    // length of the head including the blank line
}

// isTchar reports whether c may appear in an HTTP token (RFC 9110 5.6.2).
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// line returns the line at the start of b without its "\r\n" or "\n", and
// the length consumed; ok is false when no line end is in b yet.
func line(b []byte) (l []byte, n int, ok bool) {
	for i, c := range b {
		if c == '\n' {
			l = b[:i]
			if len(l) > 0 && l[len(l)-1] == '\r' {
				l = l[:len(l)-1]
			}
			return l, i + 1, true
		}
	}
	return nil, 0, false
}

// parseHead parses the request head at the start of stream, which must end
// within max bytes. proto names the parser in errors.
func parseHead(stream []byte, max int, proto string) (h httpHead, v Verdict, err error) {
	limit := stream
	if len(limit) > max {
		limit = limit[:max]
	}
	rl, n, ok := line(limit)
	if !ok {
		// Fail early on bytes that cannot start a request line.
		for _, c := range limit {
			if c == ' ' {
				break
			}
			if !isTchar(c) {
				return h, Malformed, fmt.Errorf("protocol: %s: byte %#02x in method: %w", proto, c, ErrSyntax)
			}
		}
		if len(stream) >= max {
			return h, Malformed, fmt.Errorf("protocol: %s: request line longer than %d bytes: %w", proto, max, ErrTooLarge)
		}
		return h, NeedMore, nil
	}
	if err := h.parseRequestLine(rl, proto); err != nil {
		return h, Malformed, err
	}
	start := n
	for {
		l, m, ok := line(limit[n:])
		if !ok {
			if len(stream) >= max {
				return h, Malformed, fmt.Errorf("protocol: %s: header block longer than %d bytes: %w", proto, max, ErrTooLarge)
			}
			return h, NeedMore, nil
		}
		if len(l) == 0 {
			h.headers = stream[start:n]
			h.end = n + m
			return h, Decided, nil
		}
		if err := checkHeaderLine(l, proto); err != nil {
			return h, Malformed, err
		}
		n += m
	}
}

func (h *httpHead) parseRequestLine(l []byte, proto string) error {
	sp1, sp2 := -1, -1
	for i, c := range l {
		if c == ' ' {
			if sp1 < 0 {
				sp1 = i
			} else if sp2 < 0 {
				sp2 = i
			} else {
				return fmt.Errorf("protocol: %s: request line has more than two spaces: %w", proto, ErrSyntax)
			}
		} else if c < 0x21 || c == 0x7f {
			return fmt.Errorf("protocol: %s: control byte %#02x in request line: %w", proto, c, ErrSyntax)
		}
	}
	if sp1 <= 0 || sp2 < 0 || sp2 == sp1+1 {
		return fmt.Errorf("protocol: %s: request line is not METHOD SP TARGET SP VERSION: %w", proto, ErrSyntax)
	}
	h.method, h.target = l[:sp1], l[sp1+1:sp2]
	for _, c := range h.method {
		if !isTchar(c) {
			return fmt.Errorf("protocol: %s: byte %#02x in method: %w", proto, c, ErrSyntax)
		}
	}
	ver := l[sp2+1:]
	if len(ver) != 8 || string(ver[:7]) != "HTTP/1." || (ver[7] != '0' && ver[7] != '1') {
		return fmt.Errorf("protocol: %s: version %q is not HTTP/1.0 or HTTP/1.1: %w", proto, ver, ErrSyntax)
	}
	h.minor = ver[7]
	return nil
}

// checkHeaderLine checks "name:value": a token name, no obs-fold, no
// control bytes other than HTAB in the value.
func checkHeaderLine(l []byte, proto string) error {
	if l[0] == ' ' || l[0] == '\t' {
		return fmt.Errorf("protocol: %s: obsolete header line folding: %w", proto, ErrSyntax)
	}
	colon := -1
	for i, c := range l {
		if c == ':' {
			colon = i
			break
		}
		if !isTchar(c) {
			return fmt.Errorf("protocol: %s: byte %#02x in header name: %w", proto, c, ErrSyntax)
		}
	}
	if colon <= 0 {
		return fmt.Errorf("protocol: %s: header line without name and colon: %w", proto, ErrSyntax)
	}
	for _, c := range l[colon+1:] {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return fmt.Errorf("protocol: %s: control byte %#02x in header value: %w", proto, c, ErrSyntax)
		}
	}
	return nil
}

// nextHeader returns the first header of a block checked by parseHead, its
// value without surrounding whitespace, and the remaining block.
func nextHeader(b []byte) (name, value, rest []byte, ok bool) {
	l, n, ok := line(b)
	if !ok || len(l) == 0 {
		return nil, nil, nil, false
	}
	for i, c := range l {
		if c == ':' {
			name, value = l[:i], l[i+1:]
			break
		}
	}
	for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
		value = value[1:]
	}
	for len(value) > 0 && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
		value = value[:len(value)-1]
	}
	return name, value, b[n:], true
}

// equalFold reports whether b equals the lowercase ASCII string s, ignoring
// case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if lower(b[i]) != s[i] {
			return false
		}
	}
	return true
}
