package dump

import (
	"bytes"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// patch returns a copy of b with f applied.
func patch(b []byte, f func([]byte)) []byte {
	b = bytes.Clone(b)
	f(b)
	return b
}

func TestDecode(t *testing.T) {
	fx := fixture(t)
	syn4, synack4, data4, sack4, rst4, syn6 := fx[0].ip, fx[1].ip, fx[3].ip, fx[4].ip, fx[6].ip, fx[7].ip
	dns4, dns6, icmp4, hbh6 := fx[8].ip, fx[9].ip, fx[10].ip, fx[11].ip

	ipopt := ip4(cli4, srv4, layers.IPProtocolUDP)
	ipopt.IHL = 6
	ipopt.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}} // router alert
	withIPOpts := serialize(t, ipopt, &layers.UDP{SrcPort: 1, DstPort: 2}, gopacket.Payload("abc"))

	frag := ip4(cli4, srv4, layers.IPProtocolTCP)
	frag.Flags, frag.FragOffset = layers.IPv4MoreFragments, 185
	midFragment := serialize(t, frag, gopacket.Payload(make([]byte, 64)))

	first := ip4(cli4, srv4, layers.IPProtocolUDP)
	first.Flags = layers.IPv4MoreFragments
	firstFragment := serialize(t, first, &layers.UDP{SrcPort: 1, DstPort: 2, Length: 2008}, gopacket.Payload(make([]byte, 32)))

	fh := &layers.IPv6Fragment{NextHeader: layers.IPProtocolUDP, FragmentOffset: 100, Identification: 7}
	frag6 := serialize(t, ip6(cli6, srv6, layers.IPProtocolIPv6Fragment), fh, gopacket.Payload(make([]byte, 24)))

	dst := &layers.IPv6Destination{}
	dst.NextHeader = layers.IPProtocolTCP
	dst.Options = []*layers.IPv6DestinationOption{{OptionType: 1, OptionLength: 4, ActualLength: 6, OptionData: make([]byte, 4)}}
	dstopt6 := serialize(t, ip6(cli6, srv6, layers.IPProtocolIPv6Destination), dst, tcpSeg(1, 2, 3, 4, 5, FlagSYN))

	gre := serialize(t, ip4(cli4, srv4, layers.IPProtocolGRE), gopacket.Payload(make([]byte, 8)))
	tso := patch(data4, func(b []byte) { b[2], b[3] = 0, 0 })

	tests := []struct {
		name string
		data []byte
		err  string // substring of the expected error; "" = success
		line string // expected AppendText without the time
		fn   func(t *testing.T, l *Line)
	}{
		{name: "v4 syn", data: syn4,
			line: "TCP 10.0.0.2:40000 > 10.0.0.1:443 [S] seq=1000 win=64240 len=0 <mss 1460,sackOK,TS val 100 ecr 0,wscale 7>",
			fn: func(t *testing.T, l *Line) {
				mss, ok1 := l.MSS()
				ws, ok2 := l.WScale()
				val, ecr, ok3 := l.Timestamps()
				if !ok1 || mss != 1460 || !ok2 || ws != 7 || !ok3 || val != 100 || ecr != 0 || !l.SACKPermitted() {
					t.Errorf("options: mss %d %v ws %d %v ts %d %d %v sackOK %v", mss, ok1, ws, ok2, val, ecr, ok3, l.SACKPermitted())
				}
				if l.Version != 4 || l.TTL != 64 || l.IPLen != 60 || l.Src != netip.MustParseAddr("10.0.0.2") {
					t.Errorf("ip fields: %+v", l)
				}
			}},
		{name: "v4 syn-ack", data: synack4,
			line: "TCP 10.0.0.1:443 > 10.0.0.2:40000 [S.] seq=5000 ack=1001 win=65160 len=0 <mss 1460,sackOK,TS val 200 ecr 100,wscale 7>"},
		{name: "client hello", data: data4,
			line: "TCP 10.0.0.2:40000 > 10.0.0.1:443 [P.] seq=1001 ack=5001 win=502 len=43 <TS val 102 ecr 200>",
			fn: func(t *testing.T, l *Line) {
				if !bytes.Equal(l.Payload, clientHello) {
					t.Errorf("payload % x", l.Payload)
				}
				if _, ok := l.MSS(); ok || l.SACKPermitted() {
					t.Error("mss or sackOK reported on a segment without them")
				}
			}},
		{name: "sack", data: sack4,
			line: "TCP 10.0.0.1:443 > 10.0.0.2:40000 [.] seq=5001 ack=1001 win=509 len=0 <TS val 201 ecr 102,sack {1011:1044}>"},
		{name: "rst", data: rst4, line: "TCP 10.0.0.1:443 > 10.0.0.2:40000 [R] seq=5001 win=0 len=0"},
		{name: "v6 syn", data: syn6,
			line: "TCP [fd00::2]:40001 > [fd00::1]:443 [SEW] seq=7000 win=64800 len=0 <mss 1440,sackOK,TS val 300 ecr 0,wscale 7>"},
		{name: "v4 dns", data: dns4, line: "UDP 10.0.0.2:53000 > 10.0.0.1:53 len=27",
			fn: func(t *testing.T, l *Line) {
				if !bytes.Contains(l.Payload, []byte("\x01a\x07example\x00")) {
					t.Errorf("payload % x", l.Payload)
				}
			}},
		{name: "v6 dns", data: dns6, line: "UDP [fd00::2]:53001 > [fd00::1]:53 len=33"},
		{name: "icmp echo", data: icmp4, line: "ICMP 10.0.0.2 > 10.0.0.1 type=8 code=0 len=12"},
		{name: "icmp6 behind hop-by-hop", data: hbh6, line: "ICMP6 fd00::2 > fd00::1 type=128 code=0 len=12"},
		{name: "v6 destination options", data: dstopt6, line: "TCP [fd00::2]:1 > [fd00::1]:2 [S] seq=3 win=5 len=0"},
		{name: "v4 options", data: withIPOpts, line: "UDP 10.0.0.2:1 > 10.0.0.1:2 len=3"},
		{name: "v4 middle fragment", data: midFragment, line: "TCP 10.0.0.2 > 10.0.0.1 frag=1480+ len=64"},
		{name: "v4 first fragment", data: patch(firstFragment, func(b []byte) { b[24], b[25] = 0x07, 0xd8 }), line: "UDP 10.0.0.2:1 > 10.0.0.1:2 frag=0+ len=2000"},
		{name: "udp length beyond payload", data: patch(dns4, func(b []byte) { b[24], b[25] = 0x07, 0xd8 }), err: "udp: length 2008 exceeds IP payload length 35"},
		{name: "v6 fragment", data: frag6, line: "UDP fd00::2 > fd00::1 frag=800 len=24"},
		{name: "gre", data: gre, line: "IP 10.0.0.2 > 10.0.0.1 proto=47 len=8"},
		{name: "total length 0 (tso)", data: tso,
			line: "TCP 10.0.0.2:40000 > 10.0.0.1:443 [P.] seq=1001 ack=5001 win=502 len=43 <TS val 102 ecr 200>"},
		{name: "snaplen cut", data: data4[:70],
			line: "TCP 10.0.0.2:40000 > 10.0.0.1:443 [P.] seq=1001 ack=5001 win=502 len=43 <TS val 102 ecr 200> caplen=70",
			fn: func(t *testing.T, l *Line) {
				if len(l.Payload) != 70-52 {
					t.Errorf("payload %d bytes, want 18", len(l.Payload))
				}
			}},

		{name: "empty", data: nil, err: "ip: empty packet"},
		{name: "version 5", data: patch(syn4, func(b []byte) { b[0] = 0x55 }), err: "ip: version 5 is neither 4 nor 6"},
		{name: "ihl 4", data: patch(syn4, func(b []byte) { b[0] = 0x44 }), err: "ipv4: header length 16 below 20"},
		{name: "ihl beyond data", data: patch(syn4[:22], func(b []byte) { b[0] = 0x46 }), err: "ipv4: header truncated: have 22 of 24 bytes"},
		{name: "total below ihl", data: patch(syn4, func(b []byte) { b[2], b[3] = 0, 10 }), err: "ipv4: total length 10 below header length 20"},
		{name: "tcp data offset 4", data: patch(syn4, func(b []byte) { b[32] = 0x40 }), err: "tcp: data offset 16 below 20"},
		{name: "tcp data offset beyond segment", data: patch(rst4, func(b []byte) { b[32] = 0xf0 }), err: "tcp: header truncated: have 20 of 60 bytes"},
		{name: "tcp option length 0", data: patch(syn4, func(b []byte) { b[41] = 0 }), err: "tcp: option 2 at offset 20: length 0 does not fit 20 option bytes"},
		{name: "tcp option overruns header", data: patch(syn4, func(b []byte) { b[58] = 9 }), err: "tcp: option 3 at offset 37: length 9 does not fit 3 option bytes"},
		{name: "tcp option without length", data: patch(syn4, func(b []byte) { b[57], b[58], b[59] = 1, 1, 3 }), err: "tcp: option 3 at offset 39: length byte missing"},
		{name: "udp length 7", data: patch(dns4, func(b []byte) { b[24], b[25] = 0, 7 }), err: "udp: length 7 below 8"},
		{name: "v6 extension truncated", data: hbh6[:42], err: "ipv6: extension header 0"},
		{name: "v6 fragment header truncated", data: frag6[:44], err: "ipv6: fragment header truncated: have 4 of 8 bytes"},
		{name: "v6 extension beyond payload length", data: patch(hbh6, func(b []byte) { b[4], b[5] = 0, 4 }), err: "ipv6: extension header 0"},
		{name: "icmp truncated", data: icmp4[:22], err: "icmp: header truncated: have 2 of 4 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l Line
			err := Decode(tt.data, &l)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Decode error %v, want one containing %q", err, tt.err)
				}
				if l.Err != err {
					t.Errorf("l.Err = %v, want the returned error", l.Err)
				}
				if s := l.String(); !strings.Contains(s, " ERR ") || !strings.Contains(s, tt.err) {
					t.Errorf("line %q lacks ERR and the error", s)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got, _ := strings.CutPrefix(l.String(), "00:00:00.000000 "); got != tt.line {
				t.Errorf("line\n got %q\nwant %q", got, tt.line)
			}
			if tt.fn != nil {
				tt.fn(t, &l)
			}
		})
	}
}

// TestDecodeReuse checks that Decode clears what a previous packet left.
func TestDecodeReuse(t *testing.T) {
	fx := fixture(t)
	var l Line
	if err := Decode(fx[0].ip, &l); err != nil {
		t.Fatal(err)
	}
	l.Name, l.Decision = "a.example", "10.0.1.2:443"
	if err := Decode(fx[8].ip, &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Options) != 0 || l.Name != "" || l.Decision != "" || l.Flags != 0 || l.Seq != 0 {
		t.Errorf("state left from the previous packet: %+v", l)
	}
	allocs := testing.AllocsPerRun(100, func() { _ = Decode(fx[0].ip, &l) })
	if allocs != 0 {
		t.Errorf("Decode allocates %v times per packet, want 0", allocs)
	}
}

// TestDecodeTruncated cuts every fixture packet at every length: Decode must
// fail without panic while headers are incomplete, and succeed once they are.
func TestDecodeTruncated(t *testing.T) {
	for i, p := range fixture(t) {
		if p.caplen > 0 {
			continue
		}
		var l Line
		if err := Decode(p.ip, &l); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		hdr := len(p.ip) - len(l.Payload)
		if l.Proto == ProtoICMP || l.Proto == ProtoICMPv6 {
			hdr += 4 // the payload of ICMP is the whole message
		}
		for n := 0; n < len(p.ip); n++ {
			err := Decode(p.ip[:n], &l)
			if n < hdr && err == nil {
				t.Errorf("packet %d cut at %d of %d header bytes: no error", i, n, hdr)
			}
			if n >= hdr && err != nil {
				t.Errorf("packet %d cut at %d (headers complete at %d): %v", i, n, hdr, err)
			}
			var out bytes.Buffer
			if err := l.Format(&out, true); err != nil {
				t.Fatal(err)
			}
			if out.Len() == 0 || bytes.Count(out.Bytes()[:bytes.IndexByte(out.Bytes(), '\n')+1], []byte("\n")) != 1 {
				t.Errorf("packet %d cut at %d: bad output %q", i, n, out.String())
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, p := range fixture(f) {
		f.Add(p.ip)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var l Line
		err := Decode(data, &l)
		s := l.String()
		if err := l.Format(io.Discard, true); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s, "\n") {
			t.Fatalf("line contains a newline: %q", s)
		}
		if err != nil {
			if !strings.Contains(s, " ERR ") {
				t.Fatalf("error %v but line %q", err, s)
			}
			return
		}
		if l.Len < 0 || len(l.Payload) > len(data) {
			t.Fatalf("len %d payload %d of %d bytes", l.Len, len(l.Payload), len(data))
		}
		if start := cap(data) - cap(l.Payload); len(l.Payload) > 0 && &data[start] != &l.Payload[0] {
			t.Fatal("payload is not a part of the packet")
		}
	})
}
