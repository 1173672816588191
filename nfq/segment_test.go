package nfq

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestBuildParseRoundTrip(t *testing.T) {
	for _, o := range []out{
		{src: netip.MustParseAddrPort("10.0.0.1:443"), dst: netip.MustParseAddrPort("10.0.0.2:40000"),
			seq: 0xfffffff0, ack: 7, flags: flagSYN | flagACK, window: 65535,
			opts: tcpOptions{mss: 1460, wscale: 7, sackPerm: true}},
		{src: netip.MustParseAddrPort("[fd00::2]:1"), dst: netip.MustParseAddrPort("[fd00:1::2]:80"),
			seq: 1, ack: 2, flags: flagACK | flagPSH, window: 512, opts: tcpOptions{wscale: -1}, payload: []byte("GET / HTTP/1.1\r\n")},
		{src: netip.MustParseAddrPort("10.0.0.1:443"), dst: netip.MustParseAddrPort("10.0.0.2:40000"),
			seq: 9, flags: flagRST, opts: tcpOptions{wscale: -1}},
		{src: netip.MustParseAddrPort("10.0.0.2:40000"), dst: netip.MustParseAddrPort("10.0.1.2:443"),
			seq: 5, flags: flagSYN, window: 64240,
			opts: tcpOptions{mss: 1460, wscale: 7, sackPerm: true, ts: true, tsVal: 0xdeadbeef}},
		{src: netip.MustParseAddrPort("[fd00::1]:443"), dst: netip.MustParseAddrPort("[fd00::2]:40000"),
			seq: 5, ack: 6, flags: flagSYN | flagACK, window: 16384,
			opts: tcpOptions{mss: 1440, wscale: 2, ts: true, tsEcr: 77}},
		{src: netip.MustParseAddrPort("10.0.0.1:443"), dst: netip.MustParseAddrPort("10.0.0.2:40000"),
			seq: 1, ack: 2, flags: flagACK | flagPSH, window: 512,
			opts: tcpOptions{wscale: -1, ts: true, tsVal: 1, tsEcr: 0xffffffff}, payload: []byte("HTTP/1.1 200 OK\r\n")},
	} {
		b := builders.Get().(*builder)
		pkt, err := b.build(&o)
		if err != nil {
			t.Fatal(err)
		}
		var s segment
		if err := parseSegment(pkt, &s); err != nil {
			t.Fatalf("parse %x: %v", pkt, err)
		}
		if s.src != o.src || s.dst != o.dst || s.seq != o.seq || s.ack != o.ack || s.flags != o.flags ||
			s.window != o.window || !bytes.Equal(s.payload, o.payload) {
			t.Errorf("round trip: sent %+v, parsed %+v", o, s)
		}
		if s.opts != o.opts {
			t.Errorf("options: sent %+v, parsed %+v", o.opts, s.opts)
		}
		if !checksumOK(pkt) {
			t.Errorf("bad checksum in %x", pkt)
		}
	}
}

// checksumOK verifies the TCP checksum over the pseudo-header.
func checksumOK(pkt []byte) bool {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	var l4 []byte
	if pkt[0]>>4 == 4 {
		ihl := int(pkt[0]&0xf) * 4
		l4 = pkt[ihl:]
		add(pkt[12:20])
	} else {
		l4 = pkt[40:]
		add(pkt[8:40])
	}
	add([]byte{0, 6, byte(len(l4) >> 8), byte(len(l4))})
	add(l4)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

func TestParseSegmentRejects(t *testing.T) {
	good, _ := builders.Get().(*builder).build(&out{src: netip.MustParseAddrPort("10.0.0.1:1"),
		dst: netip.MustParseAddrPort("10.0.0.2:2"), opts: tcpOptions{wscale: -1}, payload: []byte("xyz")})
	good = append([]byte(nil), good...)
	for n := range len(good) {
		var s segment
		if err := parseSegment(good[:n], &s); err == nil {
			t.Errorf("truncated to %d bytes: no error", n)
		}
	}
	frag := append([]byte(nil), good...)
	frag[6] |= 0x20 // more fragments
	var s segment
	if err := parseSegment(frag, &s); err != errFrag {
		t.Errorf("fragment: %v", err)
	}
}

func TestSeqLess(t *testing.T) {
	for _, c := range []struct {
		a, b uint32
		want bool
	}{{1, 2, true}, {2, 1, false}, {0xfffffff0, 5, true}, {5, 0xfffffff0, false}, {7, 7, false}} {
		if got := seqLess(c.a, c.b); got != c.want {
			t.Errorf("seqLess(%#x, %#x) = %v", c.a, c.b, got)
		}
	}
}

func FuzzParseSegment(f *testing.F) {
	good, _ := builders.Get().(*builder).build(&out{src: netip.MustParseAddrPort("10.0.0.1:1"),
		dst: netip.MustParseAddrPort("10.0.0.2:2"), flags: flagSYN, opts: tcpOptions{mss: 1400, wscale: 3, sackPerm: true}})
	f.Add(append([]byte(nil), good...))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s segment
		if parseSegment(b, &s) == nil && len(s.payload) > len(b) {
			t.Fatal("payload longer than packet")
		}
	})
}
