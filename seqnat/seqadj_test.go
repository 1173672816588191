package seqnat

import "testing"

func TestHandshakeSeqAdj(t *testing.T) {
	tests := []struct {
		name        string
		h           Handshake
		orig, reply SeqAdj
	}{
		{
			name:  "identity",
			h:     Handshake{ClientISN: 1000, RouterISN: 5000, BackendSYNISN: 1000, BackendISN: 5000},
			orig:  SeqAdj{1000, 0, 0},
			reply: SeqAdj{5000, 0, 0},
		},
		{
			name:  "sni",
			h:     Handshake{ClientISN: 100, RouterISN: 7000, BackendSYNISN: 300, BackendISN: 9000},
			orig:  SeqAdj{100, 200, 200},
			reply: SeqAdj{9000, 0xffffffff - 1999, 0xffffffff - 1999}, // -2000
		},
		{
			name: "connect",
			// Client sent a 40-byte CONNECT line, falg answered 39 bytes.
			h:     Handshake{ClientISN: 10, RouterISN: 20, BackendSYNISN: 10, BackendISN: 20, Consumed: 40, SentToClient: 39},
			orig:  SeqAdj{10, 0xffffffff - 39, 0xffffffff - 39}, // -40
			reply: SeqAdj{20, 39, 39},
		},
		{
			name: "proxy header replayed",
			// falg consumed the 517-byte ClientHello and replayed it behind a
			// 28-byte PROXY v2 header.
			h:     Handshake{ClientISN: 1, RouterISN: 1, BackendSYNISN: 1, BackendISN: 1, Consumed: 517, SentToBackend: 545},
			orig:  SeqAdj{1, 28, 28},
			reply: SeqAdj{1, 0, 0},
		},
		{
			name:  "client ISN at wrap",
			h:     Handshake{ClientISN: 0xffffffff, RouterISN: 0xfffffff0, BackendSYNISN: 5, BackendISN: 0x10},
			orig:  SeqAdj{0xffffffff, 6, 6},
			reply: SeqAdj{0x10, 0xffffffe0, 0xffffffe0},
		},
		{
			name:  "consumed bytes cross wrap",
			h:     Handshake{ClientISN: 0xfffffff0, RouterISN: 0, BackendSYNISN: 0x7fffffff, BackendISN: 0x80000000, Consumed: 0x20, SentToClient: 3},
			orig:  SeqAdj{0xfffffff0, 0x7fffffef, 0x7fffffef},
			reply: SeqAdj{0x80000000, 0x80000003, 0x80000003},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig, reply := tt.h.SeqAdj()
			if orig != tt.orig {
				t.Errorf("orig = %+v, want %+v", orig, tt.orig)
			}
			if reply != tt.reply {
				t.Errorf("reply = %+v, want %+v", reply, tt.reply)
			}
			checkMapping(t, tt.h, orig, reply)
		})
	}
}

// checkMapping replays the kernel's rewrite on the numbers each end will
// see, at the start of the flow, after 2^31 and 3*2^30 bytes, and for the
// SYN itself.
func checkMapping(t *testing.T, h Handshake, orig, reply SeqAdj) {
	t.Helper()
	clientNext := h.ClientISN + 1 + h.Consumed            // first byte the kernel forwards
	backendWants := h.BackendSYNISN + 1 + h.SentToBackend // where the backend expects it
	backendNext := h.BackendISN + 1                       // backend's first byte
	clientWants := h.RouterISN + 1 + h.SentToClient       // where the client expects it
	for _, d := range []uint32{0, 1, 1 << 20, 1 << 31, 3 << 30, 0xffffffff - h.Consumed} {
		// Client data and the backend's ack of it.
		if got, want := orig.AdjustSeq(clientNext+d), backendWants+d; got != want {
			t.Errorf("client seq +%#x: got %#x, want %#x", d, got, want)
		}
		if got, want := orig.AdjustAck(backendWants+d), clientNext+d; got != want {
			t.Errorf("backend ack +%#x: got %#x, want %#x", d, got, want)
		}
		// Backend data and the client's ack of it.
		if got, want := reply.AdjustSeq(backendNext+d), clientWants+d; got != want {
			t.Errorf("backend seq +%#x: got %#x, want %#x", d, got, want)
		}
		if got, want := reply.AdjustAck(clientWants+d), backendNext+d; got != want {
			t.Errorf("client ack +%#x: got %#x, want %#x", d, got, want)
		}
	}
	// A retransmitted SYN (seq == pos, not after it) moves by the same offset.
	if got, want := orig.AdjustSeq(h.ClientISN), h.ClientISN+orig.OffsetAfter; got != want {
		t.Errorf("client SYN: got %#x, want %#x", got, want)
	}
}

func TestSeqAdjBeforeAfter(t *testing.T) {
	// A position with different offsets, as a NAT helper would leave it.
	s := SeqAdj{CorrectionPos: 0xfffffff0, OffsetBefore: 5, OffsetAfter: 10}
	tests := []struct {
		seq, want uint32
	}{
		{0xffffffe0, 0xffffffe5}, // before pos
		{0xfffffff0, 0xfffffff5}, // at pos: not after
		{0xfffffff1, 0xfffffffb}, // after pos
		{0x00000010, 0x0000001a}, // after pos, across the wrap
		{0x7ffffff1, 0x7ffffff6}, // 2^31+1 past pos: the kernel says "before"
	}
	for _, tt := range tests {
		if got := s.AdjustSeq(tt.seq); got != tt.want {
			t.Errorf("AdjustSeq(%#x) = %#x, want %#x", tt.seq, got, tt.want)
		}
	}
	// Acks are compared after removing offset_before.
	if got, want := s.AdjustAck(0xfffffff0+5), uint32(0xfffffff0); got != want {
		t.Errorf("AdjustAck at pos = %#x, want %#x", got, want)
	}
	if got, want := s.AdjustAck(0x0000001a), uint32(0x10); got != want {
		t.Errorf("AdjustAck after pos = %#x, want %#x", got, want)
	}
}
