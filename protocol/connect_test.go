package protocol

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestConnect(t *testing.T) {
	users := map[string]string{"alice": "s3cret"}
	auth := "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret")) + "\r\n"
	wrong := "Proxy-Authorization: basic " + base64.StdEncoding.EncodeToString([]byte("alice:nope")) + "\r\n"
	tests := []struct {
		name    string
		stream  string
		users   map[string]string
		max     int
		want    Verdict
		host    string
		consume int
		err     error
		reply   string
	}{
		{"plain", "CONNECT Example.com.:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", nil, 0, Decided, "example.com:443", 60, nil, ""},
		{"pipelined data", "CONNECT a:1 HTTP/1.1\r\n\r\n\x16\x03\x01", nil, 0, Decided, "a:1", 24, nil, ""},
		{"ipv6", "CONNECT [FD00::1]:8443 HTTP/1.0\r\n\r\n", nil, 0, Decided, "[fd00::1]:8443", 35, nil, ""},
		{"ipv4", "CONNECT 10.0.1.2:8080 HTTP/1.1\r\n\r\n", nil, 0, Decided, "10.0.1.2:8080", 34, nil, ""},
		{"auth ok", "CONNECT a:1 HTTP/1.1\r\n" + auth + "\r\n", users, 0, Decided, "a:1", 24 + len(auth), nil, ""},
		{"partial", "CONNECT a:1 HTTP/1.1\r\n", nil, 0, NeedMore, "", 0, nil, ""},
		{"partial method", "CONN", nil, 0, NeedMore, "", 0, nil, ""},
		{"auth missing", "CONNECT a:1 HTTP/1.1\r\n\r\n", users, 0, Malformed, "", 0, ErrAuth, string(connectAuthNeeded)},
		{"auth wrong", "CONNECT a:1 HTTP/1.1\r\n" + wrong + "\r\n", users, 0, Malformed, "", 0, ErrAuth, string(connectAuthNeeded)},
		{"auth bad base64", "CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic !!!\r\n\r\n", users, 0, Malformed, "", 0, ErrAuth, string(connectAuthNeeded)},
		{"auth other scheme", "CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Bearer x\r\n\r\n", users, 0, Malformed, "", 0, ErrAuth, string(connectAuthNeeded)},
		{"get", "GET / HTTP/1.1\r\n\r\n", nil, 0, Malformed, "", 0, ErrNotConnect, ""},
		{"lowercase method", "connect a:1 HTTP/1.1\r\n\r\n", nil, 0, Malformed, "", 0, ErrNotConnect, ""},
		{"no port", "CONNECT a HTTP/1.1\r\n\r\n", nil, 0, Malformed, "", 0, ErrBadName, ""},
		{"port 0", "CONNECT a:0 HTTP/1.1\r\n\r\n", nil, 0, Malformed, "", 0, ErrBadName, ""},
		{"port too big", "CONNECT a:65536 HTTP/1.1\r\n\r\n", nil, 0, Malformed, "", 0, ErrBadName, ""},
		{"bad version", "CONNECT a:1 HTTP/2\r\n\r\n", nil, 0, Malformed, "", 0, ErrSyntax, ""},
		{"too large", "CONNECT a:1 HTTP/1.1\r\nX: " + strings.Repeat("x", 200) + "\r\n\r\n", nil, 100, Malformed, "", 0, ErrTooLarge, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			newP := mustNew("connect", Options{Users: tt.users, MaxHeader: tt.max})
			p := newP()
			d := feedWhole(p, []byte(tt.stream)).d
			if d.Verdict != tt.want || d.Name != tt.host || d.Consume != tt.consume || string(d.Reply) != tt.reply {
				t.Fatalf("got %v %q %d %q (%v), want %v %q %d %q", d.Verdict, d.Name, d.Consume, d.Reply, d.Err, tt.want, tt.host, tt.consume, tt.reply)
			}
			if tt.err != nil && !errors.Is(d.Err, tt.err) {
				t.Fatalf("error %v, want %v", d.Err, tt.err)
			}
			if d.Reply != nil {
				if r := p.Reply(BadRequest); r == nil || len(r) != 0 {
					t.Fatalf("Reply(BadRequest) after final Malformed reply = %q, want empty non-nil", r)
				}
			}
			if err := checkConsistent("connect", newP, []byte(tt.stream)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestConnectReplies(t *testing.T) {
	p := mustNew("connect", Options{})()
	for o, want := range map[Outcome]string{
		OK:          "HTTP/1.1 200 Connection established\r\n\r\n",
		NotAllowed:  "HTTP/1.1 403 ",
		Refused:     "HTTP/1.1 502 ",
		Unreachable: "HTTP/1.1 502 ",
		Timeout:     "HTTP/1.1 504 ",
		BadRequest:  "HTTP/1.1 400 ",
	} {
		r := p.Reply(o)
		if !bytes.HasPrefix(r, []byte(want)) || !bytes.HasSuffix(r, []byte("\r\n\r\n")) {
			t.Errorf("Reply(%v) = %q, want prefix %q", o, r, want)
		}
	}
}
