package seqnat

// SeqAdj is one direction's sequence adjustment as the kernel stores it
// (struct nf_ct_seqadj, sent as CTA_SEQ_ADJ_ORIG or CTA_SEQ_ADJ_REPLY).
// Offsets are two's-complement: the kernel reads them as s32, and all
// arithmetic is modulo 2^32.
type SeqAdj struct {
	CorrectionPos uint32 // sequence number where the offset changed
	OffsetBefore  uint32 // offset for seq not after CorrectionPos
	OffsetAfter   uint32 // offset for seq after CorrectionPos
}

// Handshake describes the two TCP handshakes falg completed for one flow and
// the bytes it consumed or injected on each side before the hand-over.
// All sequence numbers are absolute (as on the wire).
type Handshake struct {
	ClientISN     uint32 // client's SYN seq
	RouterISN     uint32 // ISN falg used in its SYN-ACK to the client
	BackendSYNISN uint32 // ISN falg used in its SYN to the backend
	BackendISN    uint32 // backend's SYN-ACK seq
	Consumed      uint32 // client bytes falg consumed (the kernel will not forward them)
	SentToBackend uint32 // bytes falg sent the backend itself (replayed client bytes, PROXY header, ...)
	SentToClient  uint32 // bytes falg sent the client itself (e.g. "200 Connection established")
}

// SeqAdj returns the CTA_SEQ_ADJ_ORIG and CTA_SEQ_ADJ_REPLY values that make
// the kernel translate between the client's and the backend's sequence
// spaces (DESIGN.md section 3 step 5).
//
// Kernel semantics (net/netfilter/nf_conntrack_seqadj.c, nf_ct_seq_adjust),
// for a packet travelling in direction dir, with this = seq[dir] and
// other = seq[!dir]:
//
//	seq' = seq + (after(seq, this.pos) ? this.after : this.before)
//	ack' = ack - (after(ack - other.before, other.pos) ? other.after : other.before)
//
// SACK blocks are corrected like ack. after(a, b) is (int32)(a-b) > 0.
//
// Original direction (client -> backend). The first client byte the kernel
// will forward has client seq ClientISN+1+Consumed; the backend expects it at
// BackendSYNISN+1+SentToBackend, because falg's SYN consumed one number and
// falg itself already delivered SentToBackend bytes. So
//
//	orig.off = (BackendSYNISN + 1 + SentToBackend) - (ClientISN + 1 + Consumed)
//
// The backend's acks (reply direction) are in backend space and get orig.off
// subtracted, which maps them back into client space.
//
// Reply direction (backend -> client). The first backend byte has seq
// BackendISN+1; the client expects it at RouterISN+1+SentToClient. So
//
//	reply.off = (RouterISN + 1 + SentToClient) - (BackendISN + 1)
//
// and the client's acks get reply.off subtracted on their way to the backend.
//
// Both offsets are constant for the life of the flow, so OffsetBefore =
// OffsetAfter = off, and CorrectionPos is that direction's ISN (ClientISN,
// BackendISN). With before == after the position never changes the result,
// which matters for three reasons:
//   - a held packet released at hand-over, a retransmission of a byte falg
//     already consumed, or a stray SYN (seq == ISN, not "after" it) gets the
//     same offset as every other packet;
//   - after() is a signed 32-bit comparison: once a flow has moved 2^31 bytes
//     past pos, after(seq, pos) turns false and the kernel picks OffsetBefore.
//     Only before == after keeps flows longer than 2 GiB right;
//   - if anything later calls nf_ct_seqadj_set on the entry (a NAT helper), it
//     takes the "before == after" branch and starts from a sane position.
func (h Handshake) SeqAdj() (orig, reply SeqAdj) {
	o := (h.BackendSYNISN + 1 + h.SentToBackend) - (h.ClientISN + 1 + h.Consumed)
	r := (h.RouterISN + 1 + h.SentToClient) - (h.BackendISN + 1)
	orig = SeqAdj{CorrectionPos: h.ClientISN, OffsetBefore: o, OffsetAfter: o}
	reply = SeqAdj{CorrectionPos: h.BackendISN, OffsetBefore: r, OffsetAfter: r}
	return orig, reply
}

// after reports whether a is after b in 32-bit sequence space, as the
// kernel's after() does.
func after(a, b uint32) bool { return int32(b-a) < 0 }

// AdjustSeq returns seq as the kernel rewrites it for a packet in the
// direction s belongs to.
func (s SeqAdj) AdjustSeq(seq uint32) uint32 {
	if after(seq, s.CorrectionPos) {
		return seq + s.OffsetAfter
	}
	return seq + s.OffsetBefore
}

// AdjustAck returns ack as the kernel rewrites it for a packet travelling in
// the direction opposite to the one s belongs to. SACK block edges are
// rewritten the same way.
func (s SeqAdj) AdjustAck(ack uint32) uint32 {
	if after(ack-s.OffsetBefore, s.CorrectionPos) {
		return ack - s.OffsetAfter
	}
	return ack - s.OffsetBefore
}
