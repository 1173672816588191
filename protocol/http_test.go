package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestHTTP(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		max    int
		want   Verdict
		host   string
		err    error
	}{
		{"host", "GET / HTTP/1.1\r\nHost: Example.COM\r\nAccept: */*\r\n\r\n", 0, Decided, "example.com", nil},
		{"host with port", "GET / HTTP/1.1\r\nhost:  a.example.:8080 \r\n\r\nbody", 0, Decided, "a.example", nil},
		{"ipv6 literal", "GET / HTTP/1.1\r\nHost: [FD00::0:1]:8080\r\n\r\n", 0, Decided, "fd00::1", nil},
		{"ipv6 literal no port", "GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", 0, Decided, "::1", nil},
		{"ipv4", "GET / HTTP/1.0\r\nHost: 10.0.0.1:80\r\n\r\n", 0, Decided, "10.0.0.1", nil},
		{"bare LF", "POST /x HTTP/1.1\nHost: a.b\n\n", 0, Decided, "a.b", nil},
		{"absolute form wins", "GET http://user@Abs.Example:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n", 0, Decided, "abs.example", nil},
		{"no host 1.0", "GET / HTTP/1.0\r\n\r\n", 0, Decided, "", nil},
		{"no host 1.1", "GET / HTTP/1.1\r\nAccept: x\r\n\r\n", 0, Decided, "", nil},
		{"empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0, Decided, "", nil},
		{"partial", "GET / HTTP/1.1\r\nHost: a\r\n", 0, NeedMore, "", nil},
		{"empty", "", 0, NeedMore, "", nil},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0, Malformed, "", ErrSyntax},
		{"bad host", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 0, Malformed, "", ErrBadName},
		{"bad port", "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 0, Malformed, "", ErrBadName},
		{"bad ipv6", "GET / HTTP/1.1\r\nHost: [fd00::g]:1\r\n\r\n", 0, Malformed, "", ErrBadName},
		{"ipv6 zone", "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", 0, Malformed, "", ErrBadName},
		{"http2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, Malformed, "", ErrSyntax},
		{"tls", "\x16\x03\x01\x02\x00", 0, Malformed, "", ErrSyntax},
		{"folding", "GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", 0, Malformed, "", ErrSyntax},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 0, Malformed, "", ErrSyntax},
		{"control in value", "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", 0, Malformed, "", ErrSyntax},
		{"three spaces", "GET / x HTTP/1.1\r\n\r\n", 0, Malformed, "", ErrSyntax},
		{"too large", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 100) + "\r\n\r\n", 64, Malformed, "", ErrTooLarge},
		{"long request line", "GET /" + strings.Repeat("a", 100), 64, Malformed, "", ErrTooLarge},
		{"fits exactly", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27, Decided, "a", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			newP := mustNew("http", Options{MaxHeader: tt.max})
			d := feedWhole(newP(), []byte(tt.stream)).d
			if d.Verdict != tt.want || d.Name != tt.host || d.Consume != 0 {
				t.Fatalf("got %v %q %d (%v), want %v %q", d.Verdict, d.Name, d.Consume, d.Err, tt.want, tt.host)
			}
			if tt.err != nil && !errors.Is(d.Err, tt.err) {
				t.Fatalf("error %v, want %v", d.Err, tt.err)
			}
			if err := checkConsistent("http", newP, []byte(tt.stream)); err != nil {
				t.Fatal(err)
			}
			if newP().Reply(NotAllowed) != nil {
				t.Fatal("http has a reply")
			}
		})
	}
}

func TestHTTPTruncated(t *testing.T) {
	s := []byte("GET /index.html HTTP/1.1\r\nHost: www.example.org\r\nUser-Agent: t\r\n\r\n")
	p := mustNew("http", Options{})()
	for k := 0; k < len(s); k++ {
		if d := p.Feed(s[:k]); d.Verdict != NeedMore {
			t.Fatalf("prefix %d: %v %v", k, d.Verdict, d.Err)
		}
	}
	if d := p.Feed(s); d.Verdict != Decided || d.Name != "www.example.org" {
		t.Fatalf("got %+v", d)
	}
}
