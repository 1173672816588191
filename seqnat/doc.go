// Package seqnat computes per-flow sequence-number offsets and hands a flow
// to the kernel as a conntrack entry with NAT and seqadj, over ctnetlink.
//
// Once falg has completed the client's and the backend's TCP handshakes
// itself, Handshake.SeqAdj gives the offsets that map one sequence space onto
// the other, and Conn.Create installs a confirmed, established entry:
//
//	orig, reply := Handshake{...}.SeqAdj()
//	err := conn.Create(Flow{
//		Proto:  unix.IPPROTO_TCP,
//		Orig:   Tuple{Src: client, Dst: asked},
//		NATDst: backend,
//		Mark:   mark,
//		TCP:    &TCPInfo{WScaleOrig: cws, WScaleReply: bws},
//		SeqAdjOrig: &orig, SeqAdjReply: &reply,
//	})
//
// From then on the kernel rewrites addresses, ports, seq, ack and SACK
// blocks of every packet of the flow. The namespace needs nat prerouting and
// postrouting chains for the NAT to happen (see DESIGN.md section 3).
//
// The package speaks raw ctnetlink (with mdlayher/netlink's attribute
// codec), because it needs attributes (CTA_NAT_DST, CTA_NAT_SRC, seqadj with
// zero offsets) that higher-level conntrack libraries do not send. It reads
// replies itself, on blocking sockets outside Go's poller (see
// falg/nlsock): the kernel flags the answer to a single GET as multi-part
// and sends no DONE after it, so a GET ends on its one answer, other
// requests ask for an acknowledgement and end on it, and every read has a
// timeout.
//
// Errors name the operation and wrap the kernel's errno, so
// errors.Is(err, unix.EEXIST) works; a Get that finds nothing returns
// unix.ENOENT itself.
package seqnat
