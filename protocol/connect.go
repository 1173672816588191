package protocol

import (
	"encoding/base64"
	"errors"
	"fmt"
)

// ErrNotConnect reports a request whose method is not CONNECT.
var ErrNotConnect = errors.New("not a CONNECT request")

// Replies of the connect parser.
var (
	connectOK          = []byte("HTTP/1.1 200 Connection established\r\n\r\n")
	connectForbidden   = []byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	connectBadGateway  = []byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	connectTimeout     = []byte("HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	connectBadRequest  = []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	connectAuthNeeded  = []byte("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"falg\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	connectMethodFirst = "CONNECT "
)

// maxCredentials bounds a decoded Proxy-Authorization credential.
const maxCredentials = 512

// connectParser reads an HTTP/1.x CONNECT request head. Name is the
// requested "host:port"; Consume is the length of the head. With Users set,
// a missing or wrong Proxy-Authorization: Basic answers Malformed with Reply
// set to a 407 response.
type connectParser struct {
	max      int
	users    map[string]string
	answered bool // a Malformed decision carried the final reply
	name     [nameBufLen]byte
}

func (p *connectParser) Feed(stream []byte) Decision {
	// Fail fast on anything that is not a CONNECT.
	n := min(len(stream), len(connectMethodFirst))
	if string(stream[:n]) != connectMethodFirst[:n] {
		return Decision{Verdict: Malformed, Err: fmt.Errorf("protocol: connect: %w", ErrNotConnect)}
	}
	h, v, err := parseHead(stream, p.max, "connect")
	if v != Decided {
		return Decision{Verdict: v, Err: err}
	}
	name, ok := appendHostPort(p.name[:0], h.target)
	if !ok {
		return Decision{Verdict: Malformed, Err: fmt.Errorf("protocol: connect: target %q is not host:port: %w", h.target, ErrBadName)}
	}
	if p.users != nil && !p.authorized(h.headers) {
		p.answered = true
		return Decision{Verdict: Malformed, Reply: connectAuthNeeded, Err: fmt.Errorf("protocol: connect: %w", ErrAuth)}
	}
	return Decision{Verdict: Decided, Name: string(name), Consume: h.end}
}

// authorized checks the first Proxy-Authorization header against p.users.
func (p *connectParser) authorized(headers []byte) bool {
	for rest := headers; ; {
		name, value, r, ok := nextHeader(rest)
		if !ok {
			return false
		}
		rest = r
		if !equalFold(name, "proxy-authorization") {
			continue
		}
		if len(value) < 6 || !equalFold(value[:6], "basic ") {
			return false
		}
		enc := value[6:]
		for len(enc) > 0 && enc[0] == ' ' {
			enc = enc[1:]
		}
		var buf [maxCredentials]byte
		if base64.StdEncoding.DecodedLen(len(enc)) > len(buf) {
			return false
		}
		n, err := base64.StdEncoding.Decode(buf[:], enc)
		if err != nil {
			return false
		}
		return checkUser(p.users, buf[:n])
	}
}

// checkUser checks "user:password" against users.
func checkUser(users map[string]string, cred []byte) bool {
	for i, c := range cred {
		if c == ':' {
			return checkPassword(users, cred[:i], cred[i+1:])
		}
	}
	return false
}

// checkPassword compares in time independent of where the password differs.
func checkPassword(users map[string]string, user, pass []byte) bool {
	want, ok := users[string(user)]
	if !ok || len(want) != len(pass) {
		return false
	}
	var diff byte
	for i := range pass {
		diff |= want[i] ^ pass[i]
	}
	return diff == 0
}

func (p *connectParser) Reply(o Outcome) []byte {
	if p.answered {
		return empty
	}
	switch o {
	case OK:
		return connectOK
	case NotAllowed:
		return connectForbidden
	case Refused, Unreachable:
		return connectBadGateway
	case Timeout:
		return connectTimeout
	}
	return connectBadRequest
}

func (p *connectParser) Reset() { p.answered = false }
