package protocol

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func TestSOCKS5(t *testing.T) {
	users := map[string]string{"bob": "pw"}
	noAuth := []byte{5, 1, 0}
	userPass := []byte{5, 2, 0, 2}
	login := []byte{1, 3, 'b', 'o', 'b', 2, 'p', 'w'}
	badLogin := []byte{1, 3, 'b', 'o', 'b', 2, 'p', 'x'}
	v4 := []byte{5, 1, 0, 1, 10, 0, 1, 2, 0x1f, 0x90}
	v6 := []byte{5, 1, 0, 4, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80}
	dom := []byte{5, 1, 0, 3, 12, 'E', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm', '.', 1, 0xbb}
	tests := []struct {
		name    string
		stream  []byte
		users   map[string]string
		want    Verdict
		host    string
		consume int
		replies []byte // all replies handed out, fed byte by byte
		err     error
	}{
		{"ipv4", cat(noAuth, v4), nil, Decided, "10.0.1.2:8080", 13, []byte{5, 0}, nil},
		{"ipv6", cat(noAuth, v6), nil, Decided, "[fd00::1]:80", 25, []byte{5, 0}, nil},
		{"domain", cat(noAuth, dom), nil, Decided, "example.com:443", 22, []byte{5, 0}, nil},
		{"domain ipv6 text", cat(noAuth, []byte{5, 1, 0, 3, 3, ':', ':', '1', 0, 22}), nil, Decided, "[::1]:22", 13, []byte{5, 0}, nil},
		{"pipelined data", cat(noAuth, v4, []byte("GET /")), nil, Decided, "10.0.1.2:8080", 13, []byte{5, 0}, nil},
		{"several methods", cat([]byte{5, 3, 1, 2, 0}, v4), nil, Decided, "10.0.1.2:8080", 15, []byte{5, 0}, nil},
		{"auth", cat(userPass, login, v4), users, Decided, "10.0.1.2:8080", 22, []byte{5, 2, 1, 0}, nil},
		{"greeting only", noAuth, nil, NeedMore, "", 0, []byte{5, 0}, nil},
		{"auth pending", userPass, users, NeedMore, "", 0, []byte{5, 2}, nil},
		{"bad login", cat(userPass, badLogin, v4), users, Malformed, "", 0, []byte{5, 2, 1, 1}, ErrAuth},
		{"unknown user", cat(userPass, []byte{1, 1, 'x', 0}), users, Malformed, "", 0, []byte{5, 2, 1, 1}, ErrAuth},
		{"auth version", cat(userPass, []byte{2, 0}), users, Malformed, "", 0, []byte{5, 2, 1, 1}, ErrSyntax},
		{"no acceptable method", []byte{5, 1, 2}, nil, Malformed, "", 0, []byte{5, 0xff}, ErrAuth},
		{"no-auth refused when users set", noAuth, users, Malformed, "", 0, []byte{5, 0xff}, ErrAuth},
		{"zero methods", []byte{5, 0}, nil, Malformed, "", 0, []byte{5, 0xff}, ErrSyntax},
		{"socks4", []byte{4, 1, 0, 80, 10, 0, 0, 1, 0}, nil, Malformed, "", 0, nil, ErrNotSOCKS5},
		{"tls", []byte{22, 3, 1}, nil, Malformed, "", 0, nil, ErrNotSOCKS5},
		{"bind", cat(noAuth, []byte{5, 2, 0, 1, 1, 2, 3, 4, 0, 80}), nil, Malformed, "", 0, cat([]byte{5, 0}, socks5Replies[7]), ErrUnsupported},
		{"udp associate", cat(noAuth, []byte{5, 3, 0, 1, 1, 2, 3, 4, 0, 80}), nil, Malformed, "", 0, cat([]byte{5, 0}, socks5Replies[7]), ErrUnsupported},
		{"address type", cat(noAuth, []byte{5, 1, 0, 9, 1, 2, 3}), nil, Malformed, "", 0, cat([]byte{5, 0}, socks5Replies[8]), ErrUnsupported},
		{"request version", cat(noAuth, []byte{4, 1, 0, 1, 1}), nil, Malformed, "", 0, cat([]byte{5, 0}, socks5Replies[1]), ErrSyntax},
		{"port 0", cat(noAuth, []byte{5, 1, 0, 1, 1, 2, 3, 4, 0, 0}), nil, Malformed, "", 0, cat([]byte{5, 0}, socks5Replies[1]), ErrBadName},
		{"bad domain", cat(noAuth, []byte{5, 1, 0, 3, 3, 'a', ' ', 'b', 0, 80}), nil, Malformed, "", 0, cat([]byte{5, 0}, socks5Replies[1]), ErrBadName},
		{"empty domain", cat(noAuth, []byte{5, 1, 0, 3, 0, 0, 80}), nil, Malformed, "", 0, cat([]byte{5, 0}, socks5Replies[1]), ErrBadName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			newP := mustNew("socks5", Options{Users: tt.users})
			p := newP()
			r := feedPrefixes(p, tt.stream)
			d := r.d
			if d.Verdict != tt.want || d.Name != tt.host || d.Consume != tt.consume {
				t.Fatalf("got %v %q %d (%v), want %v %q %d", d.Verdict, d.Name, d.Consume, d.Err, tt.want, tt.host, tt.consume)
			}
			if !bytes.Equal(r.replies, tt.replies) {
				t.Fatalf("replies %x, want %x", r.replies, tt.replies)
			}
			if tt.err != nil && !errors.Is(d.Err, tt.err) {
				t.Fatalf("error %v, want %v", d.Err, tt.err)
			}
			if err := checkConsistent("socks5", newP, tt.stream); err != nil {
				t.Fatal(err)
			}
			// Feeding the same stream again hands out nothing new.
			if d := p.Feed(tt.stream); len(d.Reply) != 0 {
				t.Fatalf("second feed replies %x", d.Reply)
			}
		})
	}
}

func TestSOCKS5Replies(t *testing.T) {
	p := mustNew("socks5", Options{})()
	for o, code := range map[Outcome]byte{OK: 0, NotAllowed: 2, Refused: 5, Unreachable: 4, Timeout: 4, BadRequest: 1} {
		want := []byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0}
		if r := p.Reply(o); !bytes.Equal(r, want) {
			t.Errorf("Reply(%v) = %x, want %x", o, r, want)
		}
	}
	got := AppendSOCKS5Reply(nil, 0, netip.MustParseAddrPort("[::ffff:10.0.0.1]:1080"))
	if want := []byte{5, 0, 0, 1, 10, 0, 0, 1, 4, 56}; !bytes.Equal(got, want) {
		t.Errorf("v4 bound %x, want %x", got, want)
	}
	got = AppendSOCKS5Reply(nil, 0, netip.MustParseAddrPort("[fd00::1]:80"))
	if len(got) != 22 || got[3] != 4 || got[19] != 1 || got[21] != 80 {
		t.Errorf("v6 bound %x", got)
	}
}
