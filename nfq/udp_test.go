package nfq

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/dns/dnsmessage"
)

func TestAppendUDP(t *testing.T) {
	for _, c := range []struct {
		name     string
		src, dst string
		payload  []byte
	}{
		{"v4", "10.0.0.1:53", "10.0.0.2:40000", []byte("hello, dns")},
		{"v4 odd", "10.0.0.1:53", "10.0.0.2:1", []byte("odd")},
		{"v4 empty", "192.168.255.254:65535", "10.0.0.2:1", nil},
		{"v6", "[fd00::1]:53", "[fd00::2]:40000", []byte("hello, dns over v6")},
		{"v6 odd", "[fd00::1]:53", "[fd00:ffff::2]:9", []byte{0xff, 0xff, 0xff}},
	} {
		t.Run(c.name, func(t *testing.T) {
			src, dst := netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)
			prefix := []byte{1, 2, 3}
			b := appendUDP(append([]byte(nil), prefix...), src, dst, c.payload)
			if !bytes.Equal(b[:3], prefix) {
				t.Fatal("prefix overwritten")
			}
			// Decoded layer by layer: gopacket would read port 53 as DNS.
			var u layers.UDP
			var l4 []byte
			if src.Addr().Is4() {
				var ip layers.IPv4
				if err := ip.DecodeFromBytes(b[3:], gopacket.NilDecodeFeedback); err != nil {
					t.Fatal(err)
				}
				if err, res := ip.VerifyChecksum(); err != nil || !res.Valid {
					t.Errorf("IPv4 checksum: %v, %+v", err, res)
				}
				if int(ip.Length) != len(b)-3 || ip.TTL != 64 || ip.Protocol != layers.IPProtocolUDP {
					t.Errorf("IPv4 length %d of %d, TTL %d, protocol %v", ip.Length, len(b)-3, ip.TTL, ip.Protocol)
				}
				u.SetNetworkLayerForChecksum(&ip)
				l4 = ip.Payload
			} else {
				var ip layers.IPv6
				if err := ip.DecodeFromBytes(b[3:], gopacket.NilDecodeFeedback); err != nil {
					t.Fatal(err)
				}
				if int(ip.Length) != len(b)-3-40 || ip.HopLimit != 64 || ip.NextHeader != layers.IPProtocolUDP {
					t.Errorf("IPv6 length %d of %d, hop limit %d, next %v", ip.Length, len(b)-3-40, ip.HopLimit, ip.NextHeader)
				}
				u.SetNetworkLayerForChecksum(&ip)
				l4 = ip.Payload
			}
			if err := u.DecodeFromBytes(l4, gopacket.NilDecodeFeedback); err != nil {
				t.Fatal(err)
			}
			if err, res := u.VerifyChecksum(); err != nil || !res.Valid {
				t.Errorf("UDP checksum: %v, %+v", err, res)
			}
			if int(u.Length) != udpHeaderLen+len(c.payload) {
				t.Errorf("UDP length %d, want %d", u.Length, udpHeaderLen+len(c.payload))
			}
			var s segment
			if err := parseSegment(b[3:], &s); err != nil {
				t.Fatal(err)
			}
			if s.proto != 17 || s.src != src || s.dst != dst || !bytes.Equal(s.payload, c.payload) {
				t.Errorf("parsed %v > %v proto %d payload %q", s.src, s.dst, s.proto, s.payload)
			}
		})
	}
}

// TestDNSAnswerNoAlloc: building falg's error answer to a query costs no
// allocation (the REFUSED path of a flood of unrouted queries).
func TestDNSAnswerNoAlloc(t *testing.T) {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("x.example."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	query, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	q := segment{proto: 17, src: netip.MustParseAddrPort("10.0.0.2:4000"), dst: netip.MustParseAddrPort("10.0.0.1:53"), payload: query}
	var out []byte
	allocs := testing.AllocsPerRun(100, func() {
		b := answerBufs.Get().(*answerBuf)
		var ok bool
		if out, ok = b.build(&q, dnsmessage.RCodeRefused); !ok {
			t.Fatal("no answer")
		}
		answerBufs.Put(b)
	})
	if allocs > 0 {
		t.Errorf("%.0f allocations per answer", allocs)
	}
	var s segment
	if err := parseSegment(out, &s); err != nil {
		t.Fatal(err)
	}
	var p dnsmessage.Parser
	h, err := p.Start(s.payload)
	if err != nil || h.ID != 7 || !h.Response || h.RCode != dnsmessage.RCodeRefused {
		t.Errorf("answer header %+v, %v", h, err)
	}
	if s.src != q.dst || s.dst != q.src {
		t.Errorf("answer %v > %v, want %v > %v", s.src, s.dst, q.dst, q.src)
	}
	// A response or a message without a header is not answered.
	for _, bad := range [][]byte{query[:11], append([]byte{0, 7, 0x80}, query[3:]...)} {
		b := new(answerBuf)
		if _, ok := b.build(&segment{src: q.src, dst: q.dst, payload: bad}, dnsmessage.RCodeFormatError); ok {
			t.Errorf("answered %x", bad)
		}
	}
}

func TestUDPMemo(t *testing.T) {
	now := time.Unix(1000, 0)
	m := newUDPMemo()
	m.clock = func() time.Time { return now }
	a := tuple{netip.MustParseAddrPort("10.0.0.2:1000"), netip.MustParseAddrPort("10.0.0.1:7")}
	b := tuple{netip.MustParseAddrPort("10.0.0.3:1000"), netip.MustParseAddrPort("10.0.0.1:7")}
	if _, ok := m.get(a); ok {
		t.Fatal("empty memo has a")
	}
	m.put(a, 0x40)
	if got, ok := m.get(a); !ok || got != 0x40 {
		t.Fatalf("get a = %#x, %v", got, ok)
	}
	if _, ok := m.get(b); ok {
		t.Fatal("memo has b")
	}
	now = now.Add(udpMemoTTL + time.Millisecond)
	if _, ok := m.get(a); ok {
		t.Fatal("a outlived the TTL")
	}
	// Expired entries go at the next sweep.
	for i := range udpMemoSweep {
		m.put(tuple{netip.AddrPortFrom(netip.MustParseAddr("10.0.0.9"), uint16(i)), a.dst}, 1)
	}
	if n := m.len(); n != udpMemoSweep {
		t.Errorf("%d entries after the sweep, want %d", n, udpMemoSweep)
	}
}
