package seqnat

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// message wraps attributes in a ctnetlink message header.
func message(attrs ...[]byte) []byte {
	body := cat(attrs...)
	b := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+4+len(body)))
	b = binary.NativeEndian.AppendUint16(b, nfnlSubsysCTNetlink<<8|ctMsgDelete)
	b = append(b, make([]byte, 10)...) // flags, seq, pid
	b = append(b, unix.AF_INET, nfnetlinkV0, 0, 0)
	return append(b, body...)
}

func TestMarkFilter(t *testing.T) {
	const ours, mask = 0x00200000, 0x00200000
	flow := func(mark uint32) []byte {
		var e encoder
		e.create(&Flow{
			Proto: unix.IPPROTO_TCP,
			Orig:  Tuple{Src: netip.MustParseAddrPort("[fd00::2]:40000"), Dst: netip.MustParseAddrPort("[fd00::1]:443")},
			Mark:  mark,
			TCP:   &TCPInfo{},
		}, unix.AF_INET6)
		return e.finish(nfnlSubsysCTNetlink<<8|ctMsgDelete, 0, 0)
	}
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	many := func(n int, last []byte) []byte {
		var attrs [][]byte
		for range n {
			attrs = append(attrs, leaf(ctaStatus, 0, 0, 0, 8))
		}
		return message(append(attrs, last)...)
	}
	tests := []struct {
		name  string
		value uint32 // the mark wanted, under mask
		msg   []byte
		want  bool
	}{
		{"our mark", ours, flow(ours), true},
		{"our mark and others' bits", ours, flow(ours | 0x42), true},
		{"another mark", ours, flow(0x42), false},
		{"mark 0", ours, flow(0), false},
		{"no mark attribute", ours, message(leaf(ctaStatus, 0, 0, 0, 8)), false},
		{"no attributes", ours, message(), false},
		{"mark after a 300-byte attribute", ours, message(leaf(ctaStatus, make([]byte, 300)...), leaf(ctaMark, be32(ours)...)), true},
		{"other mark after a 300-byte attribute", ours, message(leaf(ctaStatus, make([]byte, 300)...), leaf(ctaMark, be32(1)...)), false},
		{"mark as the last attribute walked", ours, many(filterAttrs-1, leaf(ctaMark, be32(1)...)), false},
		{"mark past the walk: let through", ours, many(filterAttrs, leaf(ctaMark, be32(1)...)), true},
		{"attribute of length 0: let through", ours, message(make([]byte, 8)), true},
		{"attribute overruns the message", ours, message(binary.NativeEndian.AppendUint16(nil, 400), []byte{1, 0, 0, 0}), false},
		{"no mark attribute, filtering for mark 0", 0, message(leaf(ctaStatus, 0, 0, 0, 8)), true},
		{"mark 0 wanted, ours seen", 0, flow(ours), false},
	}
	for _, tt := range tests {
		vm, err := bpf.NewVM(markFilter(tt.value, mask))
		if err != nil {
			t.Fatal(err)
		}
		n, err := vm.Run(tt.msg)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := n > 0; got != tt.want {
			t.Errorf("%s: delivered %v, want %v", tt.name, got, tt.want)
		}
	}
}
