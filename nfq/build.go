package nfq

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// out describes a TCP segment falg sends itself.
type out struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    uint8
	window   uint16
	opts     tcpOptions // wscale -1, mss 0 and ts false leave them out
	payload  []byte
}

// builder serializes segments. Builders are pooled: each holds the layers
// and the buffer it reuses.
type builder struct {
	buf  gopacket.SerializeBuffer
	ip4  layers.IPv4
	ip6  layers.IPv6
	tcp  layers.TCP
	opts [8]layers.TCPOption
	ts   [8]byte
}

var builders = sync.Pool{New: func() any { return &builder{buf: gopacket.NewSerializeBuffer()} }}

var serializeOpts = gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}

// send builds o and injects it.
func (in *Injector) sendTCP(o *out) error {
	b := builders.Get().(*builder)
	defer builders.Put(b)
	pkt, err := b.build(o)
	if err != nil {
		return err
	}
	return in.Send(pkt, o.dst.Addr())
}

func (b *builder) build(o *out) ([]byte, error) {
	t := &b.tcp
	*t = layers.TCP{
		SrcPort: layers.TCPPort(o.src.Port()),
		DstPort: layers.TCPPort(o.dst.Port()),
		Seq:     o.seq,
		Ack:     o.ack,
		Window:  o.window,
		FIN:     o.flags&flagFIN != 0,
		SYN:     o.flags&flagSYN != 0,
		RST:     o.flags&flagRST != 0,
		PSH:     o.flags&flagPSH != 0,
		ACK:     o.flags&flagACK != 0,
		Options: b.opts[:0],
	}
	if o.opts.mss != 0 {
		t.Options = append(t.Options, layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4,
			OptionData: []byte{byte(o.opts.mss >> 8), byte(o.opts.mss)}})
	}
	// Laid out as Linux does, each option at its natural alignment.
	switch {
	case o.opts.sackPerm && o.opts.ts:
		t.Options = append(t.Options, layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2})
	case o.opts.sackPerm:
		t.Options = append(t.Options, layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
			layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
			layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2})
	case o.opts.ts:
		t.Options = append(t.Options, layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
			layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1})
	}
	if o.opts.ts {
		binary.BigEndian.PutUint32(b.ts[:4], o.opts.tsVal)
		binary.BigEndian.PutUint32(b.ts[4:], o.opts.tsEcr)
		t.Options = append(t.Options, layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: b.ts[:]})
	}
	if o.opts.wscale >= 0 {
		t.Options = append(t.Options, layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
			layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{byte(o.opts.wscale)}})
	}
	var ip gopacket.SerializableLayer
	var net gopacket.NetworkLayer
	if o.src.Addr().Is4() {
		b.ip4 = layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
			SrcIP: o.src.Addr().AsSlice(), DstIP: o.dst.Addr().AsSlice()}
		ip, net = &b.ip4, &b.ip4
	} else {
		b.ip6 = layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: o.src.Addr().AsSlice(), DstIP: o.dst.Addr().AsSlice()}
		ip, net = &b.ip6, &b.ip6
	}
	if err := t.SetNetworkLayerForChecksum(net); err != nil {
		return nil, fmt.Errorf("nfq: build segment: %w", err)
	}
	if err := gopacket.SerializeLayers(b.buf, serializeOpts, ip, t, gopacket.Payload(o.payload)); err != nil {
		return nil, fmt.Errorf("nfq: build segment %v > %v: %w", o.src, o.dst, err)
	}
	return b.buf.Bytes(), nil
}
