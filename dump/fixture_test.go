package dump

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// fixturePacket is one packet of the test capture: the IP packet and how
// many of its bytes the capture keeps (0 = all).
type fixturePacket struct {
	time   time.Time
	ip     []byte
	caplen int
}

var (
	cli4, srv4 = net.IP{10, 0, 0, 2}, net.IP{10, 0, 0, 1}
	cli6, srv6 = net.ParseIP("fd00::2"), net.ParseIP("fd00::1")
)

// clientHello is the start of a TLS 1.2 record carrying a ClientHello.
var clientHello = []byte{
	0x16, 0x03, 0x01, 0x02, 0x00, // record: handshake, TLS 1.0, 512 bytes
	0x01, 0x00, 0x01, 0xfc, // ClientHello, 508 bytes
	0x03, 0x03, // client version TLS 1.2
	0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
	0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, // random
}

func tsOpt(val, ecr uint32) layers.TCPOption {
	d := make([]byte, 8)
	binary.BigEndian.PutUint32(d, val)
	binary.BigEndian.PutUint32(d[4:], ecr)
	return layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: d}
}

func mssOpt(v uint16) layers.TCPOption {
	return layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: binary.BigEndian.AppendUint16(nil, v)}
}

func wsOpt(v uint8) layers.TCPOption {
	return layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{v}}
}

func sackBlocks(edges ...uint32) layers.TCPOption {
	var d []byte
	for _, e := range edges {
		d = binary.BigEndian.AppendUint32(d, e)
	}
	return layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionLength: uint8(2 + len(d)), OptionData: d}
}

var (
	nop    = layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1}
	sackOK = layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2}
)

// synOpts are the options a Linux client sends on its SYN.
func synOpts(mss uint16, ts, ecr uint32) []layers.TCPOption {
	return []layers.TCPOption{mssOpt(mss), sackOK, tsOpt(ts, ecr), nop, wsOpt(7)}
}

// serialize builds an IP packet from ls with lengths and checksums fixed.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	for _, l := range ls {
		var nl gopacket.NetworkLayer
		switch ip := ls[0].(type) {
		case *layers.IPv4:
			nl = ip
		case *layers.IPv6:
			nl = ip
		}
		switch x := l.(type) {
		case *layers.TCP:
			x.SetNetworkLayerForChecksum(nl)
		case *layers.UDP:
			x.SetNetworkLayerForChecksum(nl)
		case *layers.ICMPv6:
			x.SetNetworkLayerForChecksum(nl)
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return bytes.Clone(buf.Bytes())
}

func ip4(src, dst net.IP, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 1, Flags: layers.IPv4DontFragment, Protocol: proto, SrcIP: src, DstIP: dst}
}

func ip6(src, dst net.IP, next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: src, DstIP: dst}
}

func tcpSeg(sp, dp uint16, seq, ack uint32, win uint16, flags uint8, opts ...layers.TCPOption) *layers.TCP {
	return &layers.TCP{
		SrcPort: layers.TCPPort(sp), DstPort: layers.TCPPort(dp), Seq: seq, Ack: ack, Window: win,
		FIN: flags&FlagFIN != 0, SYN: flags&FlagSYN != 0, RST: flags&FlagRST != 0, PSH: flags&FlagPSH != 0,
		ACK: flags&FlagACK != 0, URG: flags&FlagURG != 0, ECE: flags&FlagECE != 0, CWR: flags&FlagCWR != 0,
		Options: opts,
	}
}

func dnsQuery(id uint16, name string) *layers.DNS {
	return &layers.DNS{ID: id, RD: true, QDCount: 1, Questions: []layers.DNSQuestion{
		{Name: []byte(name), Type: layers.DNSTypeA, Class: layers.DNSClassIN},
	}}
}

// fixture returns the packets of testdata/fixture.*: a TCP handshake with
// options, a ClientHello segment, a SACK, FIN and RST, an IPv6 SYN, DNS
// queries over IPv4 and IPv6, ICMP and ICMPv6 echoes (the latter behind a
// hop-by-hop header) and a SYN cut short by the capture.
func fixture(t testing.TB) []fixturePacket {
	t.Helper()
	base := time.Date(2024, 5, 6, 21, 10, 27, 123456000, time.UTC)
	const (
		cport, sport = 40000, 443
		ciss, siss   = 1000, 5000
	)
	tcp4 := func(fromClient bool, seq, ack uint32, win uint16, flags uint8, payload []byte, opts ...layers.TCPOption) []byte {
		src, dst, sp, dp := cli4, srv4, uint16(cport), uint16(sport)
		if !fromClient {
			src, dst, sp, dp = srv4, cli4, sport, cport
		}
		return serialize(t, ip4(src, dst, layers.IPProtocolTCP), tcpSeg(sp, dp, seq, ack, win, flags, opts...), gopacket.Payload(payload))
	}
	hbh := &layers.IPv6HopByHop{}
	hbh.NextHeader = layers.IPProtocolICMPv6
	hbh.Options = []*layers.IPv6HopByHopOption{
		{OptionType: 5, OptionLength: 2, ActualLength: 4, OptionData: []byte{0, 0}}, // router alert
		{OptionType: 1, OptionLength: 0, ActualLength: 2},                           // PadN
	}
	pkts := [][]byte{
		tcp4(true, ciss, 0, 64240, FlagSYN, nil, synOpts(1460, 100, 0)...),
		tcp4(false, siss, ciss+1, 65160, FlagSYN|FlagACK, nil, synOpts(1460, 200, 100)...),
		tcp4(true, ciss+1, siss+1, 502, FlagACK, nil, nop, nop, tsOpt(101, 200)),
		tcp4(true, ciss+1, siss+1, 502, FlagPSH|FlagACK, clientHello, nop, nop, tsOpt(102, 200)),
		tcp4(false, siss+1, ciss+1, 509, FlagACK, nil, nop, nop, tsOpt(201, 102), nop, nop, sackBlocks(ciss+11, ciss+1+uint32(len(clientHello)))),
		tcp4(true, ciss+1+uint32(len(clientHello)), siss+1, 502, FlagFIN|FlagACK, nil, nop, nop, tsOpt(103, 201)),
		tcp4(false, siss+1, 0, 0, FlagRST, nil),
		serialize(t, ip6(cli6, srv6, layers.IPProtocolTCP), tcpSeg(40001, 443, 7000, 0, 64800, FlagSYN|FlagECE|FlagCWR, synOpts(1440, 300, 0)...)),
		serialize(t, ip4(cli4, srv4, layers.IPProtocolUDP), &layers.UDP{SrcPort: 53000, DstPort: 53}, dnsQuery(0x1234, "a.example")),
		serialize(t, ip6(cli6, srv6, layers.IPProtocolUDP), &layers.UDP{SrcPort: 53001, DstPort: 53}, dnsQuery(0x5678, "api-7.b.example")),
		serialize(t, ip4(cli4, srv4, layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1}, gopacket.Payload("ping")),
		serialize(t, ip6(cli6, srv6, layers.IPProtocolIPv6HopByHop), hbh, &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}, gopacket.Payload([]byte{0, 1, 0, 1, 'p', 'i', 'n', 'g'})),
		tcp4(true, ciss, 0, 64240, FlagSYN, nil, synOpts(1460, 100, 0)...),
	}
	out := make([]fixturePacket, len(pkts))
	for i, p := range pkts {
		out[i] = fixturePacket{time: base.Add(time.Duration(i) * 1250 * time.Microsecond), ip: p}
	}
	out[len(out)-1].caplen = 30 // cut inside the TCP header
	return out
}

// captured returns the bytes of p the capture keeps.
func (p fixturePacket) captured() []byte {
	if p.caplen > 0 {
		return p.ip[:p.caplen]
	}
	return p.ip
}

// frame wraps ip in a link header of type lt.
func frame(lt layers.LinkType, ip []byte) []byte {
	et := uint16(0x0800)
	if ip[0]>>4 == 6 {
		et = 0x86dd
	}
	var h []byte
	switch lt {
	case layers.LinkTypeEthernet:
		h = []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2}
		h = binary.BigEndian.AppendUint16(h, et)
	case layers.LinkTypeLinuxSLL:
		h = []byte{0, 0, 0, 1, 0, 6, 0x02, 0, 0, 0, 0, 2, 0, 0} // outgoing, ARPHRD_ETHER, 6-byte address
		h = binary.BigEndian.AppendUint16(h, et)
	case layers.LinkTypeLinuxSLL2:
		h = binary.BigEndian.AppendUint16(nil, et)
		h = append(h, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 0x02, 0, 0, 0, 0, 2, 0, 0) // reserved, ifindex 2, ARPHRD_ETHER, incoming, addr
	case layers.LinkTypeNull:
		h = binary.NativeEndian.AppendUint32(nil, 2)
	}
	return append(h, ip...)
}

// fixtureFile is one encoding of the fixture.
type fixtureFile struct {
	name string
	ng   bool
	lt   layers.LinkType
}

var fixtureFiles = []fixtureFile{
	{"fixture.pcap", false, layers.LinkTypeEthernet},
	{"fixture.pcapng", true, layers.LinkTypeRaw},
	{"fixture-sll.pcap", false, layers.LinkTypeLinuxSLL},
	{"fixture-sll2.pcapng", true, layers.LinkTypeLinuxSLL2},
}

// encode writes pkts as a capture in the format of f.
func (f fixtureFile) encode(t testing.TB, pkts []fixturePacket) []byte {
	t.Helper()
	var buf bytes.Buffer
	write := func(ci gopacket.CaptureInfo, data []byte) error { return nil }
	var flush func() error
	if f.ng {
		intf := pcapgo.NgInterface{Name: "lab0", OS: "linux", LinkType: f.lt, TimestampResolution: 9}
		w, err := pcapgo.NewNgWriterInterface(&buf, intf, pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Application: "falg dump test"}})
		if err != nil {
			t.Fatal(err)
		}
		write, flush = w.WritePacket, w.Flush
	} else {
		w := pcapgo.NewWriterNanos(&buf)
		if err := w.WriteFileHeader(65535, f.lt); err != nil {
			t.Fatal(err)
		}
		write, flush = w.WritePacket, func() error { return nil }
	}
	for _, p := range pkts {
		full := frame(f.lt, p.ip)
		data := frame(f.lt, p.captured())
		ci := gopacket.CaptureInfo{Timestamp: p.time, CaptureLength: len(data), Length: len(full), InterfaceIndex: 0}
		if err := write(ci, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
