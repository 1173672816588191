package seqnat

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// filterAttrs is how many top-level attributes the mark filter walks before
// it gives up and lets the event through. A destroy event carries about ten
// before CTA_MARK (tuples, zone, ID, status, timeout, counters, timestamp,
// protoinfo).
const filterAttrs = 16

// FilterMark makes the kernel drop, before they reach the socket, the
// events of entries whose mark&mask is not value: falg's entries
// are a few among all the router's, and every other event would wake the
// reader for nothing. An event whose mark the filter cannot find within
// its first attributes is delivered; the caller still checks the mark.
func (ev *Events) FilterMark(value, mask uint32) error {
	prog, err := bpf.Assemble(markFilter(value, mask))
	if err != nil {
		return fmt.Errorf("seqnat: events: assemble mark filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		filter[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(ev.sock.Fd(), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("seqnat: events: attach mark filter: %w", err)
	}
	return nil
}

// markFilter returns a classic BPF program over one ctnetlink message
// (nlmsghdr, nfgenmsg, attributes) that walks the top-level attributes,
// unrolled, X holding the current attribute's offset. Attribute headers are
// in host byte order, which the program's big-endian loads must undo; the
// mark itself is big-endian.
func markFilter(value, mask uint32) []bpf.Instruction {
	const (
		attrs  = unix.NLMSG_HDRLEN + 4 // struct nfgenmsg
		accept = 0xffffffff
	)
	var ne [2]byte
	binary.NativeEndian.PutUint16(ne[:], ctaMark)
	markType := uint32(binary.BigEndian.Uint16(ne[:]))
	lenLo, lenHi := uint32(0), uint32(1) // nla_len's bytes
	if ne[0] == 0 {
		lenLo, lenHi = 1, 0
	}
	// The kernel leaves out a mark of 0.
	var noMark uint32
	if value == 0 {
		noMark = accept
	}
	p := []bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegX, Val: attrs}}
	for range filterAttrs {
		p = append(p,
			// No room left for a CTA_MARK: the entry's mark is 0.
			bpf.LoadExtension{Num: bpf.ExtLen},
			bpf.ALUOpConstant{Op: bpf.ALUOpSub, Val: 8},
			bpf.JumpIfX{Cond: bpf.JumpGreaterOrEqual, SkipTrue: 1},
			bpf.RetConstant{Val: noMark},
			// CTA_MARK: deliver if the mark matches, else drop.
			bpf.LoadIndirect{Off: 2, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: markType, SkipFalse: 5},
			bpf.LoadIndirect{Off: 4, Size: 4},
			bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: value, SkipFalse: 1},
			bpf.RetConstant{Val: accept},
			bpf.RetConstant{Val: 0},
			// X += NLA_ALIGN(nla_len).
			bpf.StoreScratch{Src: bpf.RegX, N: 0},
			bpf.LoadIndirect{Off: lenHi, Size: 1},
			bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 8},
			bpf.StoreScratch{Src: bpf.RegA, N: 1},
			bpf.LoadIndirect{Off: lenLo, Size: 1},
			bpf.LoadScratch{Dst: bpf.RegX, N: 1},
			bpf.ALUOpX{Op: bpf.ALUOpAdd},
			bpf.ALUOpConstant{Op: bpf.ALUOpAdd, Val: unix.NLA_ALIGNTO - 1},
			bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: ^uint32(unix.NLA_ALIGNTO - 1)},
			bpf.LoadScratch{Dst: bpf.RegX, N: 0},
			bpf.ALUOpX{Op: bpf.ALUOpAdd},
			bpf.TAX{},
		)
	}
	// More attributes than the walk covers: let user space look.
	return append(p, bpf.RetConstant{Val: accept})
}
