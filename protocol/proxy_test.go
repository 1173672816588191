package protocol

import (
	"errors"
	"net/netip"
	"testing"
)

func TestParseProxyHeader(t *testing.T) {
	s4, d4 := netip.MustParseAddrPort("192.0.2.1:56324"), netip.MustParseAddrPort("198.51.100.2:443")
	s6, d6 := netip.MustParseAddrPort("[2001:db8::1]:1"), netip.MustParseAddrPort("[2001:db8::2]:65535")
	v2local := []byte(proxyV2Sig + "\x20\x00\x00\x00")
	v2tlv := append([]byte(proxyV2Sig+"\x21\x11\x00\x13"), 192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 1, 187, 0x04, 0, 4, 't', 'e', 's', 't')
	v2udp := append([]byte(proxyV2Sig+"\x21\x12\x00\x0c"), 192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 1, 187)
	v2unix := append([]byte(proxyV2Sig+"\x21\x31\x00\xd8"), make([]byte, 216)...)
	tests := []struct {
		name     string
		in       []byte
		want     Verdict
		n        int
		version  int
		local    bool
		udp      bool
		src, dst netip.AddrPort
		err      error
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET"), Decided, 45, 1, false, false, s4, d4, nil},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n"), Decided, 44, 1, false, false, s6, d6, nil},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), Decided, 15, 1, true, false, netip.AddrPort{}, netip.AddrPort{}, nil},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), Decided, 35, 1, true, false, netip.AddrPort{}, netip.AddrPort{}, nil},
		{"v1 partial", []byte("PROXY TCP4 192.0.2.1"), NeedMore, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, nil},
		{"v1 prefix", []byte("PRO"), NeedMore, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, nil},
		{"v1 family mismatch", []byte("PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrSyntax},
		{"v1 port range", []byte("PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrSyntax},
		{"v1 leading zero", []byte("PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrSyntax},
		{"v1 extra field", []byte("PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrSyntax},
		{"v1 bare LF", []byte("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrSyntax},
		{"v1 too long", append([]byte("PROXY TCP6 "), make([]byte, 100)...), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrTooLarge},
		{"v1 bad prefix", []byte("PROXX"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrNoProxyHeader},
		{"no header", []byte("GET / HTTP/1.1\r\n"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrNoProxyHeader},
		{"v2 tcp4 tlv", append(v2tlv, 'x'), Decided, 35, 2, false, false, s4, d4, nil},
		{"v2 udp4", v2udp, Decided, 28, 2, false, true, s4, d4, nil},
		{"v2 local", v2local, Decided, 16, 2, true, false, netip.AddrPort{}, netip.AddrPort{}, nil},
		{"v2 unix", v2unix, Decided, 232, 2, true, false, netip.AddrPort{}, netip.AddrPort{}, nil},
		{"v2 partial", v2tlv[:20], NeedMore, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, nil},
		{"v2 bad sig", []byte("\r\n\r\n\x00\r\nQUIX"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrNoProxyHeader},
		{"v2 version 1", []byte(proxyV2Sig + "\x11\x11\x00\x0c"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrSyntax},
		{"v2 command 2", []byte(proxyV2Sig + "\x22\x11\x00\x0c"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrSyntax},
		{"v2 family 4", []byte(proxyV2Sig + "\x21\x41\x00\x0c"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrSyntax},
		{"v2 short addresses", []byte(proxyV2Sig + "\x21\x21\x00\x0c"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrSyntax},
		{"v2 too large", []byte(proxyV2Sig + "\x21\x11\xff\xff"), Malformed, 0, 0, false, false, netip.AddrPort{}, netip.AddrPort{}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, v, err := ParseProxyHeader(tt.in)
			if v != tt.want || n != tt.n || h.Version != tt.version || h.Local != tt.local || h.UDP != tt.udp || h.Src != tt.src || h.Dst != tt.dst {
				t.Fatalf("got %+v n=%d %v (%v)", h, n, v, err)
			}
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if err := checkProxyPrefixes(tt.in); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// checkProxyPrefixes checks that every prefix of b before the decision asks
// for more and that the first decision is the one for all of b.
func checkProxyPrefixes(b []byte) error {
	h0, n0, v0, _ := ParseProxyHeader(b)
	for k := 0; k <= len(b); k++ {
		h, n, v, err := ParseProxyHeader(b[:k])
		if v == NeedMore {
			if err != nil || n != 0 {
				return errors.New("NeedMore with error or length")
			}
			continue
		}
		if v != v0 || (v == Decided && (h != h0 || n != n0 || n > k)) {
			return errors.New("prefix decision differs from the whole")
		}
		if v == Malformed && err == nil {
			return errors.New("Malformed without error")
		}
		return nil
	}
	return nil
}

func TestAppendProxy(t *testing.T) {
	tests := []struct {
		src, dst string
		v1       string
	}{
		{"192.0.2.1:56324", "198.51.100.2:443", "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"},
		{"[::ffff:192.0.2.1]:1", "[::ffff:198.51.100.2]:2", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n"},
		{"[2001:db8::1]:1", "[2001:db8::2]:2", "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"},
		{"192.0.2.1:1", "[2001:db8::2]:2", "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n"},
		{"", "[2001:db8::2]:2", "PROXY UNKNOWN\r\n"},
	}
	for _, tt := range tests {
		var src, dst netip.AddrPort
		if tt.src != "" {
			src = netip.MustParseAddrPort(tt.src)
		}
		dst = netip.MustParseAddrPort(tt.dst)
		if got := string(AppendProxyV1(nil, src, dst)); got != tt.v1 {
			t.Errorf("AppendProxyV1(%v, %v) = %q, want %q", src, dst, got, tt.v1)
		}
		for _, b := range [][]byte{AppendProxyV1(nil, src, dst), AppendProxyV2(nil, src, dst)} {
			h, n, v, err := ParseProxyHeader(b)
			if v != Decided || n != len(b) || err != nil {
				t.Fatalf("reparse %q: %v %d %v", b, v, n, err)
			}
			if tt.src == "" {
				if !h.Local {
					t.Errorf("%q: not local", b)
				}
				continue
			}
			if h.Local || h.Src.Port() != src.Port() || h.Dst.Port() != dst.Port() ||
				h.Src.Addr().Unmap() != src.Addr().Unmap() || h.Dst.Addr().Unmap() != dst.Addr().Unmap() {
				t.Errorf("%q reparsed as %+v", b, h)
			}
		}
	}
}

func TestProxyV2NoAllocs(t *testing.T) {
	src, dst := netip.MustParseAddrPort("[2001:db8::1]:1"), netip.MustParseAddrPort("[2001:db8::2]:2")
	buf := make([]byte, 0, 64)
	n := testing.AllocsPerRun(100, func() {
		b := AppendProxyV2(buf[:0], src, dst)
		if _, _, v, _ := ParseProxyHeader(b); v != Decided {
			t.Fatal("not decided")
		}
		AppendProxyV1(buf[:0], src, dst)
	})
	if n != 0 {
		t.Fatalf("PROXY v2 round trip allocates %v times", n)
	}
}
