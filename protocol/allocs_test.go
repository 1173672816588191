package protocol

import (
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// TestFlowAllocs checks that a pooled parser allocates nothing while it
// needs more bytes and at most the Name string when it decides.
func TestFlowAllocs(t *testing.T) {
	tests := []struct {
		proto  string
		opts   Options
		stream []byte
	}{
		{"http", Options{}, []byte("GET / HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n")},
		{"connect", Options{Users: map[string]string{"u": "p"}}, []byte("CONNECT a.example:443 HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\n")},
		{"socks5", Options{}, []byte{5, 1, 0, 5, 1, 0, 3, 9, 'a', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e', 1, 187}},
		{"socks5", Options{Users: map[string]string{"u": "p"}}, []byte{5, 1, 2, 1, 1, 'u', 1, 'p', 5, 1, 0, 1, 10, 0, 0, 1, 1, 187}},
		{"instruction", Options{}, []byte("1710.0.1.2:808048")},
		{"dns", Options{}, tcpFrame(dnsQuery(t, 1, "a.example.", dnsmessage.TypeA))},
		{"none", Options{}, nil},
	}
	for _, tt := range tests {
		p := mustNew(tt.proto, tt.opts)()
		p.Feed(tt.stream) // warm up per-parser buffers
		n := testing.AllocsPerRun(100, func() {
			p.Reset()
			for k := 0; k < len(tt.stream); k++ {
				if d := p.Feed(tt.stream[:k]); d.Verdict != NeedMore {
					t.Fatalf("%s prefix %d: %v", tt.proto, k, d.Verdict)
				}
			}
			if d := p.Feed(tt.stream); d.Verdict != Decided {
				t.Fatalf("%s: %v %v", tt.proto, d.Verdict, d.Err)
			}
			p.Reply(OK)
		})
		if n > 1 {
			t.Errorf("%s allocates %v times per flow, want at most 1 (the name)", tt.proto, n)
		}
	}
}
