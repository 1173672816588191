package dump

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Format writes l as one line:
//
//	TIME PROTO SRC > DST [fields] [hook=HOOK] [| name=N decision=D note=T]
//
// TIME is 15:04:05.000000 in l.Time's location. PROTO is TCP, UDP, ICMP,
// ICMP6, or IP for other protocols. TCP lines carry [flags] (tcpdump
// letters, "." for ACK), seq=, ack= (when ACK is set), win=, len= and
// <options>; UDP lines len=; ICMP lines type=, code=, len=. A decode error
// gives "TIME ERR [PROTO SRC > DST:] message". With verbose, every layer
// gopacket decodes from l.Data follows on its own line, indented by four
// spaces. Format returns the error of w.Write.
func (l *Line) Format(w io.Writer, verbose bool) error {
	b := l.AppendText(make([]byte, 0, 160))
	b = append(b, '\n')
	if verbose && l.Data != nil {
		b = appendLayers(b, l.Data)
	}
	_, err := w.Write(b)
	return err
}

// String returns the line Format writes without verbose, less the newline.
func (l *Line) String() string {
	return string(l.AppendText(nil))
}

// AppendText appends the line Format writes without verbose, less the
// newline, to b.
func (l *Line) AppendText(b []byte) []byte {
	b = l.Time.AppendFormat(b, "15:04:05.000000")
	if l.Err != nil {
		b = append(b, " ERR"...)
		if l.Version != 0 {
			b = append(b, ' ')
			b = append(b, protoName(l)...)
			b = append(b, ' ')
			b = l.Src.AppendTo(b)
			b = append(b, " > "...)
			b = l.Dst.AppendTo(b)
			b = append(b, ':')
		}
		b = append(b, ' ')
		b = append(b, l.Err.Error()...)
		return l.appendTrailer(b)
	}
	b = append(b, ' ')
	b = append(b, protoName(l)...)
	b = append(b, ' ')
	ports := l.FragOff == 0 && (l.Proto == ProtoTCP || l.Proto == ProtoUDP)
	b = appendAddr(b, l, false, ports)
	b = append(b, " > "...)
	b = appendAddr(b, l, true, ports)
	if l.FragOff != 0 || l.MoreFrags {
		b = append(b, " frag="...)
		b = strconv.AppendInt(b, int64(l.FragOff), 10)
		if l.MoreFrags {
			b = append(b, '+')
		}
	}
	switch {
	case l.FragOff != 0:
		if !isKnown(l.Proto) {
			b = appendUint(b, " proto=", uint64(l.Proto))
		}
		b = appendUint(b, " len=", uint64(l.Len))
	case l.Proto == ProtoTCP:
		b = append(b, " ["...)
		b = appendFlags(b, l.Flags)
		b = append(b, ']')
		b = appendUint(b, " seq=", uint64(l.Seq))
		if l.Flags&FlagACK != 0 {
			b = appendUint(b, " ack=", uint64(l.Ack))
		}
		b = appendUint(b, " win=", uint64(l.Win))
		b = appendUint(b, " len=", uint64(l.Len))
		if len(l.Options) > 0 {
			b = append(b, " <"...)
			for i, o := range l.Options {
				if i > 0 {
					b = append(b, ',')
				}
				b = o.AppendText(b)
			}
			b = append(b, '>')
		}
	case l.Proto == ProtoUDP:
		b = appendUint(b, " len=", uint64(l.Len))
	case l.Proto == ProtoICMP || l.Proto == ProtoICMPv6:
		b = appendUint(b, " type=", uint64(l.ICMPType))
		b = appendUint(b, " code=", uint64(l.ICMPCode))
		b = appendUint(b, " len=", uint64(l.Len))
	default:
		b = appendUint(b, " proto=", uint64(l.Proto))
		b = appendUint(b, " len=", uint64(l.Len))
	}
	if l.IPLen > len(l.Data) {
		b = appendUint(b, " caplen=", uint64(len(l.Data)))
	}
	return l.appendTrailer(b)
}

// appendTrailer appends the hook and what a Decider added.
func (l *Line) appendTrailer(b []byte) []byte {
	if l.Hook != "" {
		b = append(b, " hook="...)
		b = append(b, l.Hook...)
	}
	if l.Name == "" && l.Decision == "" && l.Note == "" {
		return b
	}
	b = append(b, " |"...)
	b = appendField(b, "name", l.Name)
	b = appendField(b, "decision", l.Decision)
	b = appendField(b, "note", l.Note)
	return b
}

// appendField appends " key=value", quoting value when it would break the
// line into more fields than one.
func appendField(b []byte, key, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ' ')
	b = append(b, key...)
	b = append(b, '=')
	if strings.ContainsAny(value, " \t|=\"") || !isPrint(value) {
		return strconv.AppendQuote(b, value)
	}
	return append(b, value...)
}

func isPrint(s string) bool {
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}

func appendAddr(b []byte, l *Line, dst, port bool) []byte {
	a, p := l.Src, l.SrcPort
	if dst {
		a, p = l.Dst, l.DstPort
	}
	if !port {
		return a.AppendTo(b)
	}
	if a.Is6() {
		b = append(b, '[')
		b = a.AppendTo(b)
		b = append(b, ']')
	} else {
		b = a.AppendTo(b)
	}
	b = append(b, ':')
	return strconv.AppendUint(b, uint64(p), 10)
}

func appendUint(b []byte, key string, v uint64) []byte {
	b = append(b, key...)
	return strconv.AppendUint(b, v, 10)
}

// appendFlags writes TCP flags in tcpdump's letters.
func appendFlags(b []byte, f uint8) []byte {
	if f == 0 {
		return append(b, "none"...)
	}
	for _, x := range [...]struct {
		bit uint8
		c   byte
	}{{FlagFIN, 'F'}, {FlagSYN, 'S'}, {FlagRST, 'R'}, {FlagPSH, 'P'}, {FlagACK, '.'}, {FlagURG, 'U'}, {FlagECE, 'E'}, {FlagCWR, 'W'}} {
		if f&x.bit != 0 {
			b = append(b, x.c)
		}
	}
	return b
}

func isKnown(p uint8) bool {
	return p == ProtoTCP || p == ProtoUDP || p == ProtoICMP || p == ProtoICMPv6
}

func protoName(l *Line) string {
	switch l.Proto {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoICMP:
		return "ICMP"
	case ProtoICMPv6:
		return "ICMP6"
	}
	return "IP"
}

// String returns the option as Format writes it.
func (o TCPOption) String() string { return string(o.AppendText(nil)) }

// AppendText appends the option as Format writes it: "mss 1460",
// "wscale 7", "sackOK", "TS val 1 ecr 0", "sack {1:2}{3:4}", or
// "opt-KIND" and the body in hex for other or malformed options.
func (o TCPOption) AppendText(b []byte) []byte {
	d := o.Data
	switch {
	case o.Kind == OptMSS && len(d) == 2:
		return appendUint(b, "mss ", uint64(binary.BigEndian.Uint16(d)))
	case o.Kind == OptWScale && len(d) == 1:
		return appendUint(b, "wscale ", uint64(d[0]))
	case o.Kind == OptSACKPerm && len(d) == 0:
		return append(b, "sackOK"...)
	case o.Kind == OptTimestamp && len(d) == 8:
		b = appendUint(b, "TS val ", uint64(binary.BigEndian.Uint32(d)))
		return appendUint(b, " ecr ", uint64(binary.BigEndian.Uint32(d[4:])))
	case o.Kind == OptSACK && len(d) > 0 && len(d)%8 == 0:
		b = append(b, "sack "...)
		for ; len(d) >= 8; d = d[8:] {
			b = appendUint(b, "{", uint64(binary.BigEndian.Uint32(d)))
			b = appendUint(b, ":", uint64(binary.BigEndian.Uint32(d[4:])))
			b = append(b, '}')
		}
		return b
	}
	b = appendUint(b, "opt-", uint64(o.Kind))
	if len(d) > 0 {
		b = append(b, ' ')
		b = hex.AppendEncode(b, d)
	}
	return b
}

// appendLayers appends, one per line, the layers of data that falg itself
// deals in: IPv4, IPv6 with its hop-by-hop and destination options, TCP,
// UDP, ICMP, ICMPv6, DNS, and the payload after the last of them, at most
// maxLayers. It runs gopacket's decoders one by one rather than through
// gopacket.NewPacket, which follows port numbers into every decoder
// gopacket has: each of them is input handling falg would answer for.
// gopacket's TCP decoder loops forever, appending, on an MPTCP option of
// length 0 (testdata/fuzz/FuzzDecode/f413d2552b924797: the fuzzer reports
// it as a hung or terminated process, as in a CI run), so falg checks a TCP header with its own decoder
// before gopacket sees it. A layer that does not decode ends the list with
// a line naming the error.
func appendLayers(b []byte, data []byte) []byte {
	typ := layers.LayerTypeIPv4
	if len(data) > 0 && data[0]>>4 == 6 {
		typ = layers.LayerTypeIPv6
	}
	for range maxLayers {
		l := newLayer(typ)
		if l == nil {
			if len(data) == 0 {
				break
			}
			l = new(gopacket.Payload)
		}
		var err error
		if typ == layers.LayerTypeTCP {
			err = decodeTCP(data, len(data), new(Line))
		}
		if err == nil {
			err = decodeLayer(l, data)
		}
		if err != nil {
			b = fmt.Appendf(b, "    %v: %s\n", typ, strings.ReplaceAll(err.Error(), "\n", " "))
			break
		}
		b = appendLayer(b, l)
		if ip6, ok := l.(*layers.IPv6); ok && ip6.HopByHop != nil {
			b = appendLayer(b, ip6.HopByHop) // IPv6 decodes it with itself
		}
		typ, data = nextLayerType(l), l.LayerPayload()
	}
	return b
}

// maxLayers bounds the layers appendLayers prints: IP, extension headers,
// transport, DNS, payload, and room for a tunnel.
const maxLayers = 10

// decodeLayer decodes data into l. gopacket's decoders panic on some
// malformed input (a TCP option cut short:
// testdata/fuzz/FuzzDecode/9fea025b0bac914a); that becomes an error.
func decodeLayer(l layer, data []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decoder failed: %v", r)
		}
	}()
	return l.DecodeFromBytes(data, gopacket.NilDecodeFeedback)
}

// layer is what appendLayers needs of a gopacket decoder.
type layer interface {
	gopacket.Layer
	DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error
}

// newLayer returns a fresh decoder for the layer types appendLayers prints
// by name, nil for any other.
func newLayer(t gopacket.LayerType) layer {
	switch t {
	case layers.LayerTypeIPv4:
		return new(layers.IPv4)
	case layers.LayerTypeIPv6:
		return new(layers.IPv6)
	case layers.LayerTypeIPv6Destination:
		return new(layers.IPv6Destination)
	case layers.LayerTypeTCP:
		return new(layers.TCP)
	case layers.LayerTypeUDP:
		return new(layers.UDP)
	case layers.LayerTypeICMPv4:
		return new(layers.ICMPv4)
	case layers.LayerTypeICMPv6:
		return new(layers.ICMPv6)
	case layers.LayerTypeDNS:
		return new(layers.DNS)
	}
	return nil
}

// nextLayerType returns the type of the layer that follows l.
func nextLayerType(l layer) gopacket.LayerType {
	switch l := l.(type) {
	case *layers.IPv6Destination:
		return l.NextHeader.LayerType()
	case gopacket.DecodingLayer:
		return l.NextLayerType()
	}
	return gopacket.LayerTypeZero
}

func appendLayer(b []byte, l gopacket.Layer) []byte {
	b = append(b, "    "...)
	b = append(b, layerString(l)...)
	return append(b, '\n')
}

// layerString is gopacket.LayerString, which panics on some malformed
// layers (a TCP option of a kind gopacket decodes further, such as MPTCP,
// with no data; see testdata/fuzz/FuzzDecode/b9298bc23cf47ef0): such a
// layer prints as an error instead.
func layerString(l gopacket.Layer) (s string) {
	defer func() {
		if r := recover(); r != nil {
			s = fmt.Sprintf("%v: cannot print: %v", l.LayerType(), r)
		}
	}()
	return gopacket.LayerString(l)
}
