package nfq

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// packetMessage builds an NFQNL_MSG_PACKET the way the kernel does:
// packet header, then the attributes in attrs.
func packetMessage(queue uint16, id uint32, attrs ...[]byte) []byte {
	hdr := binary.BigEndian.AppendUint32(nil, id)
	hdr = append(hdr, 0x08, 0x00, 0) // hw_protocol IPv4, hook prerouting
	body := configMessage(queue, append([][]byte{attr(attrPacketHdr, hdr)}, attrs...)...)
	b := binary.NativeEndian.AppendUint32(nil, uint32(nlHeaderLen+len(body)))
	b = binary.NativeEndian.AppendUint16(b, msgPacket)
	b = binary.NativeEndian.AppendUint16(b, 0)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint32(b, 0)
	return append(b, body...)
}

func TestParsePacket(t *testing.T) {
	ip := []byte{0x45, 0, 0, 21, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17} // odd length: padded
	b := packetMessage(7, 0xdeadbeef, attr(attrMark, be32(0x00f00001)), attr(attrPayload, ip), attr(4|unix.NLA_F_NESTED, nil))
	b = append(b, packetMessage(7, 2)...) // two messages in one datagram
	var got []Packet
	for len(b) > 0 {
		m, rest, err := nextMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		b = rest
		if m.typ != msgPacket || m.queue != 7 {
			t.Fatalf("message type %#x queue %d", m.typ, m.queue)
		}
		var p Packet
		if ok, err := parsePacket(m.body, &p); err != nil || !ok {
			t.Fatalf("parse: %v %v", ok, err)
		}
		got = append(got, p)
	}
	if len(got) != 2 {
		t.Fatalf("%d packets, want 2", len(got))
	}
	if p := got[0]; p.ID != 0xdeadbeef || p.Mark != 0x00f00001 || !bytes.Equal(p.Data, ip) {
		t.Errorf("first packet %+v", p)
	}
	if p := got[1]; p.ID != 2 || p.Mark != 0 || p.Data != nil {
		t.Errorf("second packet %+v", p)
	}
}

func TestParsePacketErrors(t *testing.T) {
	good := packetMessage(1, 9, attr(attrPayload, []byte{0x45}))
	for _, tt := range []struct {
		name   string
		b      []byte
		haveID bool
	}{
		{"no packet header", configMessage(1, attr(attrMark, be32(1)))[nfgenLen:], false},
		{"short packet header", attr(attrPacketHdr, []byte{0, 0, 0, 9}), false},
		{"short mark after the id", append(good[nlHeaderLen+nfgenLen:nlHeaderLen+nfgenLen+12], attr(attrMark, []byte{1})...), true},
		{"attribute past the end", append(attr(attrPacketHdr, []byte{0, 0, 0, 9, 8, 0, 0}), 0xff, 0, 1, 0), true},
		{"attribute header cut", append(attr(attrPacketHdr, []byte{0, 0, 0, 9, 8, 0, 0}), 8, 0), true},
	} {
		var p Packet
		haveID, err := parsePacket(tt.b, &p)
		if err == nil || haveID != tt.haveID || haveID && p.ID != 9 {
			t.Errorf("%s: haveID %v id %d err %v", tt.name, haveID, p.ID, err)
		}
	}
	for _, b := range [][]byte{good[:15], good[:nlHeaderLen+2], append([]byte{200, 0, 0, 0}, good[4:]...)} {
		if _, _, err := nextMessage(b); err == nil {
			t.Errorf("nextMessage(%x): no error", b)
		}
	}
}

func TestAppendVerdict(t *testing.T) {
	for _, tt := range []struct {
		verdict uint32
		setMark bool
		mark    uint32
	}{{Accept, false, 0}, {Drop, false, 0}, {Accept, true, 0x00f00003}} {
		b := appendVerdict([]byte("x"), 5, 0x01020304, tt.verdict, tt.setMark, tt.mark)[1:]
		m, rest, err := nextMessage(b)
		if err != nil || len(rest) != 0 {
			t.Fatalf("%v: %v, %d bytes left", tt, err, len(rest))
		}
		if m.typ != msgVerdict || m.queue != 5 || m.seq != 0x01020304 {
			t.Errorf("%v: header type %#x queue %d seq %#x", tt, m.typ, m.queue, m.seq)
		}
		if f := binary.NativeEndian.Uint16(b[6:8]); f != unix.NLM_F_REQUEST {
			t.Errorf("%v: flags %#x", tt, f)
		}
		want := attr(attrVerdictHdr, append(be32(tt.verdict), be32(0x01020304)...))
		if tt.setMark {
			want = append(want, attr(attrMark, be32(tt.mark))...)
		}
		if !bytes.Equal(m.body, want) {
			t.Errorf("%v: attributes %x, want %x", tt, m.body, want)
		}
	}
}

func TestParseError(t *testing.T) {
	body := binary.NativeEndian.AppendUint32(nil, uint32(0xffffffff-uint32(unix.ENOENT)+1))
	orig := appendVerdict(nil, 1, 42, Accept, false, 0)
	body = append(body, orig[:nlHeaderLen]...)
	errno, seq, err := parseError(body)
	if err != nil || errno != unix.ENOENT || seq != 42 {
		t.Errorf("parseError: %v %d %v", errno, seq, err)
	}
	if _, _, err := parseError(body[:10]); err == nil {
		t.Error("parseError of a cut message: no error")
	}
}

// FuzzParseMessages feeds arbitrary datagrams to the parsers the reader
// uses on what the kernel sends: they must not panic, and a payload must
// lie inside the datagram.
func FuzzParseMessages(f *testing.F) {
	f.Add(packetMessage(1, 9, attr(attrMark, be32(3)), attr(attrPayload, []byte{0x45, 0, 0, 20})))
	f.Add(appendVerdict(nil, 1, 42, Accept, true, 7))
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			m, rest, err := nextMessage(b)
			if err != nil {
				return
			}
			if len(rest) >= len(b) {
				t.Fatalf("no progress: %d of %d bytes left", len(rest), len(b))
			}
			b = rest
			var p Packet
			if _, err := parsePacket(m.body, &p); err == nil && len(p.Data) > len(m.body) {
				t.Fatalf("payload of %d bytes in a body of %d", len(p.Data), len(m.body))
			}
			parseError(m.body)
		}
	})
}
