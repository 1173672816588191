package seqnat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// leaf builds one attribute: native-endian header, data, padding.
func leaf(typ uint16, data ...byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// nest builds a nested attribute whose length the test states literally,
// so that the golden bytes pin every length the encoder writes.
func nest(t *testing.T, length uint16, typ uint16, children ...[]byte) []byte {
	t.Helper()
	body := bytes.Join(children, nil)
	if int(length) != 4+len(body) {
		t.Fatalf("golden nest %#x: stated length %d, children make %d", typ, length, 4+len(body))
	}
	b := binary.NativeEndian.AppendUint16(nil, length)
	b = binary.NativeEndian.AppendUint16(b, typ|0x8000)
	return append(b, body...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestEncodeCreateV4Golden(t *testing.T) {
	ap := netip.MustParseAddrPort
	f := Flow{
		Proto:       unix.IPPROTO_TCP,
		Orig:        Tuple{Src: ap("10.1.0.2:40000"), Dst: ap("10.9.9.9:443")},
		NATDst:      ap("10.2.0.2:8443"),
		NATSrc:      ap("10.2.0.1:50000"),
		Mark:        0x00f00042,
		Timeout:     90,
		TCP:         &TCPInfo{WScaleOrig: 7, WScaleReply: 9},
		SeqAdjOrig:  &SeqAdj{CorrectionPos: 0xfffffff0, OffsetBefore: 0x20, OffsetAfter: 0x20},
		SeqAdjReply: &SeqAdj{CorrectionPos: 0x10, OffsetBefore: 0xffffff00, OffsetAfter: 0xffffff00},
	}
	want := cat(
		[]byte{unix.AF_INET, 0, 0, 0}, // nfgenmsg
		nest(t, 52, 1, // CTA_TUPLE_ORIG
			nest(t, 20, 1, leaf(1, 10, 1, 0, 2), leaf(2, 10, 9, 9, 9)),
			nest(t, 28, 2, leaf(1, 6), leaf(2, 0x9c, 0x40), leaf(3, 0x01, 0xbb)),
		),
		nest(t, 52, 2, // CTA_TUPLE_REPLY: inverse of orig
			nest(t, 20, 1, leaf(1, 10, 9, 9, 9), leaf(2, 10, 1, 0, 2)),
			nest(t, 28, 2, leaf(1, 6), leaf(2, 0x01, 0xbb), leaf(3, 0x9c, 0x40)),
		),
		leaf(3, 0, 0, 0, 0x0e),       // CTA_STATUS
		leaf(7, 0, 0, 0, 90),         // CTA_TIMEOUT
		leaf(8, 0x00, 0xf0, 0, 0x42), // CTA_MARK
		nest(t, 48, 4, // CTA_PROTOINFO
			nest(t, 44, 1, // CTA_PROTOINFO_TCP
				leaf(1, 3),          // state ESTABLISHED
				leaf(2, 7),          // wscale orig
				leaf(3, 9),          // wscale reply
				leaf(4, 0x0b, 0x0b), // flags orig {flags, mask}
				leaf(5, 0x0b, 0x0b), // flags reply
			),
		),
		nest(t, 40, 13, // CTA_NAT_DST
			leaf(1, 10, 2, 0, 2), leaf(2, 10, 2, 0, 2),
			nest(t, 20, 3, leaf(1, 0x20, 0xfb), leaf(2, 0x20, 0xfb)),
		),
		nest(t, 40, 6, // CTA_NAT_SRC
			leaf(1, 10, 2, 0, 1), leaf(2, 10, 2, 0, 1),
			nest(t, 20, 3, leaf(1, 0xc3, 0x50), leaf(2, 0xc3, 0x50)),
		),
		nest(t, 28, 15, // CTA_SEQ_ADJ_ORIG
			leaf(1, 0xff, 0xff, 0xff, 0xf0), leaf(2, 0, 0, 0, 0x20), leaf(3, 0, 0, 0, 0x20)),
		nest(t, 28, 16, // CTA_SEQ_ADJ_REPLY
			leaf(1, 0, 0, 0, 0x10), leaf(2, 0xff, 0xff, 0xff, 0), leaf(3, 0xff, 0xff, 0xff, 0)),
	)
	checkGolden(t, f, want)
}

func TestEncodeCreateV6Golden(t *testing.T) {
	ap := netip.MustParseAddrPort
	f := Flow{
		Proto:  unix.IPPROTO_UDP,
		Orig:   Tuple{Src: ap("[fd00:1::2]:5353"), Dst: ap("[fd00:9::9]:53")},
		NATDst: ap("[fd00:2::2]:53"),
		Mark:   1,
		Zone:   7,
	}
	c := netip.MustParseAddr("fd00:1::2").As16()
	v := netip.MustParseAddr("fd00:9::9").As16()
	s := netip.MustParseAddr("fd00:2::2").As16()
	want := cat(
		[]byte{unix.AF_INET6, 0, 0, 0},
		nest(t, 76, 1,
			nest(t, 44, 1, leaf(3, c[:]...), leaf(4, v[:]...)),
			nest(t, 28, 2, leaf(1, 17), leaf(2, 0x14, 0xe9), leaf(3, 0, 53)),
		),
		nest(t, 76, 2,
			nest(t, 44, 1, leaf(3, v[:]...), leaf(4, c[:]...)),
			nest(t, 28, 2, leaf(1, 17), leaf(2, 0, 53), leaf(3, 0x14, 0xe9)),
		),
		leaf(18, 0, 7),         // CTA_ZONE
		leaf(3, 0, 0, 0, 0x0e), // CTA_STATUS
		leaf(7, 0, 0, 0, 120),  // CTA_TIMEOUT: DefaultTimeout
		leaf(8, 0, 0, 0, 1),    // CTA_MARK
		nest(t, 64, 13, // CTA_NAT_DST, no CTA_NAT_SRC
			leaf(4, s[:]...), leaf(5, s[:]...),
			nest(t, 20, 3, leaf(1, 0, 53), leaf(2, 0, 53)),
		),
	)
	checkGolden(t, f, want)
}

func checkGolden(t *testing.T, f Flow, want []byte) {
	t.Helper()
	fam, err := f.validate()
	if err != nil {
		t.Fatal(err)
	}
	var e encoder
	e.create(&f, fam)
	if !bytes.Equal(e.body(), want) {
		t.Fatalf("encoding differs\n got %x\nwant %x", e.body(), want)
	}
	// The decoder reads the same attributes back.
	got, err := decodeEntry(e.body())
	if err != nil {
		t.Fatal(err)
	}
	if got.Proto != f.Proto || got.Orig != f.Orig || got.Reply != f.Orig.Inverse() || got.Mark != f.Mark || got.Zone != f.Zone {
		t.Errorf("decoded %+v, want flow %+v", got, f)
	}
	checkSeqAdj(t, "orig", got.SeqAdjOrig, f.SeqAdjOrig)
	checkSeqAdj(t, "reply", got.SeqAdjReply, f.SeqAdjReply)
}

func TestEncodeReusesBuffer(t *testing.T) {
	ap := netip.MustParseAddrPort
	f := Flow{Proto: unix.IPPROTO_UDP, Orig: Tuple{Src: ap("10.0.0.1:1"), Dst: ap("10.0.0.2:2")}, NATDst: ap("10.0.0.3:3")}
	var e encoder
	e.create(&f, unix.AF_INET)
	first := append([]byte(nil), e.b...)
	allocs := testing.AllocsPerRun(100, func() { e.create(&f, unix.AF_INET) })
	if allocs != 0 {
		t.Errorf("create allocates %v times per call on a warm buffer", allocs)
	}
	if !bytes.Equal(e.b, first) {
		t.Errorf("re-encoding differs:\n got %x\nwant %x", e.b, first)
	}
}

func TestFlowValidate(t *testing.T) {
	ap := netip.MustParseAddrPort
	v4 := Tuple{Src: ap("10.0.0.1:1"), Dst: ap("10.0.0.2:2")}
	tests := []struct {
		name string
		f    Flow
		ok   bool
	}{
		{"tcp4", Flow{Proto: unix.IPPROTO_TCP, Orig: v4, NATDst: ap("10.0.0.3:3")}, true},
		{"4in6 addresses are IPv4", Flow{Proto: unix.IPPROTO_UDP, Orig: Tuple{Src: ap("[::ffff:10.0.0.1]:1"), Dst: ap("10.0.0.2:2")}}, true},
		{"icmp", Flow{Proto: unix.IPPROTO_ICMP, Orig: v4}, false},
		{"missing src", Flow{Proto: unix.IPPROTO_TCP, Orig: Tuple{Dst: ap("10.0.0.2:2")}}, false},
		{"mixed tuple", Flow{Proto: unix.IPPROTO_TCP, Orig: Tuple{Src: ap("10.0.0.1:1"), Dst: ap("[fd00::2]:2")}}, false},
		{"v6 dnat on v4", Flow{Proto: unix.IPPROTO_TCP, Orig: v4, NATDst: ap("[fd00::3]:3")}, false},
		{"v6 snat on v4", Flow{Proto: unix.IPPROTO_TCP, Orig: v4, NATSrc: ap("[fd00::3]:3")}, false},
		{"tcp info on udp", Flow{Proto: unix.IPPROTO_UDP, Orig: v4, TCP: &TCPInfo{}}, false},
		{"seqadj on udp", Flow{Proto: unix.IPPROTO_UDP, Orig: v4, SeqAdjOrig: &SeqAdj{}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.f.validate()
			if tt.ok != (err == nil) {
				t.Fatalf("validate = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, errInvalid) {
				t.Errorf("error %v does not wrap errInvalid", err)
			}
			if !tt.ok {
				// Create refuses before touching the (absent) socket.
				if err := new(Conn).Create(tt.f); !errors.Is(err, errInvalid) {
					t.Errorf("Create = %v, want errInvalid", err)
				}
			}
		})
	}
}

func TestDecodeEventsTypes(t *testing.T) {
	ap := netip.MustParseAddrPort
	f := Flow{Proto: unix.IPPROTO_UDP, Orig: Tuple{Src: ap("10.0.0.1:1"), Dst: ap("10.0.0.2:2")}, Mark: 9}
	var e encoder
	e.create(&f, unix.AF_INET)
	msg := func(msgType uint8, flags uint16) []byte {
		b := binary.NativeEndian.AppendUint32(nil, uint32(16+len(e.body())))
		b = binary.NativeEndian.AppendUint16(b, nfnlSubsysCTNetlink<<8|uint16(msgType))
		b = binary.NativeEndian.AppendUint16(b, flags)
		b = append(b, make([]byte, 8)...) // seq, pid
		return append(b, e.body()...)
	}
	dgram := cat(
		msg(ctMsgNew, unix.NLM_F_CREATE|unix.NLM_F_EXCL),
		msg(ctMsgNew, 0),
		msg(ctMsgDelete, 0),
		msg(ctMsgGet, 0), // not an event: skipped
	)
	evs, err := decodeEvents(dgram)
	if err != nil {
		t.Fatal(err)
	}
	want := []EventType{EventNew, EventUpdate, EventDestroy}
	if len(evs) != len(want) {
		t.Fatalf("got %d events, want %d", len(evs), len(want))
	}
	for i, ev := range evs {
		if ev.Type != want[i] || ev.Orig != f.Orig || ev.Mark != 9 {
			t.Errorf("event %d = %v %s mark %d, want %v %s mark 9", i, ev.Type, ev.Orig, ev.Mark, want[i], f.Orig)
		}
	}
	if _, err := decodeEvents(dgram[:20]); err == nil {
		t.Error("truncated datagram decoded without error")
	}
}
