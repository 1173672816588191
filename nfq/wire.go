package nfq

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// The nfnetlink_queue messages falg reads and writes, as in
// include/uapi/linux/netfilter/nfnetlink_queue.h. Each message is a netlink
// header (16 bytes), an nfgenmsg (family, version, queue number big-endian)
// and attributes. Integers inside attributes are big-endian.
const (
	nlHeaderLen  = unix.SizeofNlMsghdr
	nfgenLen     = 4
	nlAttrHeader = 4
	nlaTypeMask  = 0x3fff // without NLA_F_NESTED and NLA_F_NET_BYTEORDER

	msgPacket  = unix.NFNL_SUBSYS_QUEUE<<8 | 0 // NFQNL_MSG_PACKET
	msgVerdict = unix.NFNL_SUBSYS_QUEUE<<8 | 1 // NFQNL_MSG_VERDICT
	msgConfig  = unix.NFNL_SUBSYS_QUEUE<<8 | 2 // NFQNL_MSG_CONFIG

	attrPacketHdr  = 1  // NFQA_PACKET_HDR: id be32, hw_protocol be16, hook u8
	attrVerdictHdr = 2  // NFQA_VERDICT_HDR: verdict be32, id be32
	attrMark       = 3  // NFQA_MARK: be32
	attrPayload    = 10 // NFQA_PAYLOAD: the packet from its network header

	attrCfgCmd     = 1 // NFQA_CFG_CMD: command u8, pad u8, pf be16
	attrCfgParams  = 2 // NFQA_CFG_PARAMS: copy_range be32, copy_mode u8
	attrCfgMaxLen  = 3 // NFQA_CFG_QUEUE_MAXLEN: be32
	attrCfgMask    = 4 // NFQA_CFG_MASK: be32
	attrCfgFlags   = 5 // NFQA_CFG_FLAGS: be32
	cfgCmdBind     = 1 // NFQNL_CFG_CMD_BIND
	copyPacket     = 2 // NFQNL_COPY_PACKET
	cfgFlagFailOpn = 1 // NFQA_CFG_F_FAIL_OPEN

	verdictMsgLen = nlHeaderLen + nfgenLen + nlAttrHeader + 8
	markAttrLen   = nlAttrHeader + 4
)

// message is one netlink message of a datagram the kernel sent.
type message struct {
	typ   uint16
	seq   uint32
	queue uint16
	body  []byte // after the netlink header (and, for queue messages, the nfgenmsg)
}

// nextMessage splits the first netlink message off b. It returns the
// message and the rest of b, or an error when b does not hold a whole
// message.
func nextMessage(b []byte) (message, []byte, error) {
	if len(b) < nlHeaderLen {
		return message{}, nil, fmt.Errorf("netlink header truncated: %d bytes", len(b))
	}
	n := int(binary.NativeEndian.Uint32(b[0:4]))
	if n < nlHeaderLen || n > len(b) {
		return message{}, nil, fmt.Errorf("netlink message length %d outside 16..%d", n, len(b))
	}
	m := message{
		typ:  binary.NativeEndian.Uint16(b[4:6]),
		seq:  binary.NativeEndian.Uint32(b[8:12]),
		body: b[nlHeaderLen:n],
	}
	if m.typ>>8 == unix.NFNL_SUBSYS_QUEUE {
		if len(m.body) < nfgenLen {
			return message{}, nil, fmt.Errorf("nfgenmsg truncated: %d bytes", len(m.body))
		}
		m.queue = binary.BigEndian.Uint16(m.body[2:4])
		m.body = m.body[nfgenLen:]
	}
	return m, b[min(align(n), len(b)):], nil
}

// parsePacket fills p from the attributes of an NFQNL_MSG_PACKET; p.Data
// points into b. It reports whether it found the packet id, also when it
// returns an error: a packet with an id must still get a verdict.
func parsePacket(b []byte, p *Packet) (haveID bool, err error) {
	for len(b) > 0 {
		if len(b) < nlAttrHeader {
			return haveID, fmt.Errorf("attribute header truncated: %d bytes", len(b))
		}
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask
		if n < nlAttrHeader || n > len(b) {
			return haveID, fmt.Errorf("attribute %d length %d outside 4..%d", typ, n, len(b))
		}
		v := b[nlAttrHeader:n]
		switch typ {
		case attrPacketHdr:
			if len(v) < 7 {
				return haveID, fmt.Errorf("packet header attribute of %d bytes, want 7", len(v))
			}
			p.ID = binary.BigEndian.Uint32(v[0:4])
			haveID = true
		case attrMark:
			if len(v) < 4 {
				return haveID, fmt.Errorf("mark attribute of %d bytes, want 4", len(v))
			}
			p.Mark = binary.BigEndian.Uint32(v)
		case attrPayload:
			p.Data = v
		}
		b = b[min(align(n), len(b)):]
	}
	if !haveID {
		return false, errors.New("packet message without NFQA_PACKET_HDR")
	}
	return true, nil
}

// parseError returns the error code of an NLMSG_ERROR body (0 for an
// acknowledgement) and the sequence number of the message it answers.
func parseError(body []byte) (errno unix.Errno, seq uint32, err error) {
	if len(body) < 4+nlHeaderLen {
		return 0, 0, fmt.Errorf("netlink error message truncated: %d bytes", len(body))
	}
	code := int32(binary.NativeEndian.Uint32(body[0:4]))
	return unix.Errno(-code), binary.NativeEndian.Uint32(body[4+8 : 4+12]), nil
}

// appendVerdict appends an NFQNL_MSG_VERDICT for packet id of queue to b,
// with the packet mark set to mark when setMark is true. Its sequence
// number is the packet id, so that an error the kernel returns names it.
func appendVerdict(b []byte, queue uint16, id uint32, verdict uint32, setMark bool, mark uint32) []byte {
	n := verdictMsgLen
	if setMark {
		n += markAttrLen
	}
	b = binary.NativeEndian.AppendUint32(b, uint32(n))
	b = binary.NativeEndian.AppendUint16(b, msgVerdict)
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST)
	b = binary.NativeEndian.AppendUint32(b, id) // sequence
	b = binary.NativeEndian.AppendUint32(b, 0)  // port id: the kernel
	b = append(b, unix.AF_UNSPEC, unix.NFNETLINK_V0)
	b = binary.BigEndian.AppendUint16(b, queue)
	b = appendAttrHeader(b, attrVerdictHdr, 8)
	b = binary.BigEndian.AppendUint32(b, verdict)
	b = binary.BigEndian.AppendUint32(b, id)
	if setMark {
		b = appendAttrHeader(b, attrMark, 4)
		b = binary.BigEndian.AppendUint32(b, mark)
	}
	return b
}

// appendConfig appends an NFQNL_MSG_CONFIG request with sequence number
// seq and body (from configMessage) to b, asking for an acknowledgement.
func appendConfig(b []byte, seq uint32, body []byte) []byte {
	b = binary.NativeEndian.AppendUint32(b, uint32(nlHeaderLen+len(body)))
	b = binary.NativeEndian.AppendUint16(b, msgConfig)
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	return append(b, body...)
}

// configMessage returns the body (nfgenmsg and attributes) of an
// NFQNL_MSG_CONFIG for queue carrying attrs.
func configMessage(queue uint16, attrs ...[]byte) []byte {
	b := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0}
	b = binary.BigEndian.AppendUint16(b, queue)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

// attr returns one attribute of type typ with value v, padded.
func attr(typ uint16, v []byte) []byte {
	b := appendAttrHeader(nil, typ, len(v))
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// be32 returns v big-endian.
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func appendAttrHeader(b []byte, typ uint16, n int) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(nlAttrHeader+n))
	return binary.NativeEndian.AppendUint16(b, typ)
}

// align rounds n up to netlink's 4-byte alignment.
func align(n int) int { return (n + 3) &^ 3 }
