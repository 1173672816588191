package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"falg/nlsock"
)

// Tuple is a TCP flow's addresses as one packet carries them: from Src to Dst.
type Tuple struct {
	Src, Dst netip.AddrPort
}

// Key encodes the tuple as a key of the pending sets: saddr . sport . daddr
// . dport, each part padded to 32 bits.
func (t Tuple) Key() []byte {
	k := make([]byte, 0, 40)
	k = append(k, t.Src.Addr().AsSlice()...)
	k = append(k, byte(t.Src.Port()>>8), byte(t.Src.Port()), 0, 0)
	k = append(k, t.Dst.Addr().AsSlice()...)
	return append(k, byte(t.Dst.Port()>>8), byte(t.Dst.Port()), 0, 0)
}

// Pending adds and deletes elements of the pending sets, each call one
// nf_tables transaction. It writes the netlink batch itself on a socket of
// its own (falg/nlsock): a flow's hand-over deletes its tuple, and
// google/nftables' Flush, through a poller-registered socket, cost falg a
// thread wake-up per transaction and allocations per element.
// A Pending is safe for concurrent use.
type Pending struct {
	mu   sync.Mutex
	sock *nlsock.Conn
	seq  uint32
	out  []byte
	buf  []byte
}

// OpenPending opens a Pending on a socket in the calling thread's network
// namespace.
func OpenPending() (*Pending, error) {
	c, err := nlsock.Dial(5 * time.Second)
	if err != nil {
		return nil, fmt.Errorf("nft: pending sets: %w", err)
	}
	return &Pending{sock: c, buf: make([]byte, 8192)}, nil
}

// Close closes the socket.
func (p *Pending) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sock.Close()
}

// maxPerCommit bounds the flows of one transaction: an element list is a
// nested attribute with a 16-bit length (about 1,200 IPv6 elements), and
// the whole batch must fit the socket's send buffer.
const maxPerCommit = 512

// Add adds flows to the pending sets, so that their packets are queued to
// falg, in transactions of at most maxPerCommit flows.
func (p *Pending) Add(ts ...Tuple) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(ts) > 0 {
		n := min(len(ts), maxPerCommit)
		if err := p.commit(msgNewSetElem, unix.NLM_F_CREATE, ts[:n]); err != nil {
			return fmt.Errorf("nft: add %d pending flows: %w", n, err)
		}
		ts = ts[n:]
	}
	return nil
}

// Delete removes flows from the pending sets in transactions of at most
// maxPerCommit flows. A flow no longer in the set is not an error: it may
// have timed out. (One missing element fails its whole transaction, which
// is then done again one flow at a time.)
func (p *Pending) Delete(ts ...Tuple) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(ts) > 0 {
		n := min(len(ts), maxPerCommit)
		if err := p.delete(ts[:n]); err != nil {
			return err
		}
		ts = ts[n:]
	}
	return nil
}

func (p *Pending) delete(ts []Tuple) error {
	err := p.commit(msgDelSetElem, 0, ts)
	if !errors.Is(err, unix.ENOENT) {
		if err != nil {
			return fmt.Errorf("nft: delete %d pending flows: %w", len(ts), err)
		}
		return nil
	}
	for i := range ts {
		if err := p.commit(msgDelSetElem, 0, ts[i:i+1]); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("nft: delete pending %v > %v: %w", ts[i].Src, ts[i].Dst, err)
		}
	}
	return nil
}

// Message types and attributes of nf_tables set elements
// (include/uapi/linux/netfilter/nf_tables.h).
const (
	nfnlBatchBegin = unix.NLMSG_MIN_TYPE // NFNL_MSG_BATCH_BEGIN
	nfnlBatchEnd   = unix.NLMSG_MIN_TYPE + 1
	msgNewSetElem  = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM
	msgDelSetElem  = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_DELSETELEM
	attrElemTable  = 1 // NFTA_SET_ELEM_LIST_TABLE
	attrElemSet    = 2 // NFTA_SET_ELEM_LIST_SET
	attrElemList   = 3 // NFTA_SET_ELEM_LIST_ELEMENTS
	attrListElem   = 1 // NFTA_LIST_ELEM
	attrElemKey    = 1 // NFTA_SET_ELEM_KEY
	attrDataValue  = 1 // NFTA_DATA_VALUE
	nlaNested      = unix.NLA_F_NESTED
	nfprotoINet    = 1 // NFPROTO_INET
	attrHeaderLen  = 4
	nftablesSubsys = unix.NFNL_SUBSYS_NFTABLES
)

// commit sends one transaction: a message of type msg for the tuples of
// each family present, between batch begin and end, and reads the
// kernel's answers to them.
func (p *Pending) commit(msg uint16, flags uint16, ts []Tuple) error {
	if len(ts) == 0 {
		return nil
	}
	if p.sock.Fd() < 0 {
		return errors.New("closed")
	}
	p.out = p.out[:0]
	p.seq++
	first := p.seq
	p.out = p.appendMsg(p.out, nfnlBatchBegin, unix.NLM_F_REQUEST, unix.AF_UNSPEC, nftablesSubsys)
	p.out = endMsg(p.out, 0)
	var acks []uint32
	for _, set := range []string{SetPending4, SetPending6} {
		start := len(p.out)
		p.seq++
		p.out = p.appendMsg(p.out, msg, unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags, nfprotoINet, 0)
		p.out = appendString(p.out, attrElemTable, Table)
		p.out = appendString(p.out, attrElemSet, set)
		list := len(p.out)
		p.out = appendAttr(p.out, attrElemList|nlaNested, nil)
		n := 0
		for _, t := range ts {
			if (set == SetPending4) != t.Src.Addr().Is4() {
				continue
			}
			elem := len(p.out)
			p.out = appendAttr(p.out, attrListElem|nlaNested, nil)
			key := len(p.out)
			p.out = appendAttr(p.out, attrElemKey|nlaNested, nil)
			p.out = appendAttr(p.out, attrDataValue, t.Key())
			endAttr(p.out, key)
			endAttr(p.out, elem)
			n++
		}
		if n == 0 {
			p.out = p.out[:start]
			p.seq--
			continue
		}
		endAttr(p.out, list)
		p.out = endMsg(p.out, start)
		acks = append(acks, p.seq)
	}
	p.seq++
	end := len(p.out)
	p.out = p.appendMsg(p.out, nfnlBatchEnd, unix.NLM_F_REQUEST, unix.AF_UNSPEC, nftablesSubsys)
	p.out = endMsg(p.out, end)
	if err := p.sock.Write(p.out); err != nil {
		return err
	}
	return p.sock.Acks(p.buf, first, acks...)
}

// appendMsg appends a netlink header with length to be filled by endMsg,
// and an nfgenmsg.
func (p *Pending) appendMsg(b []byte, typ, flags uint16, family byte, resID uint16) []byte {
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, p.seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, family, unix.NFNETLINK_V0)
	return binary.BigEndian.AppendUint16(b, resID)
}

// endMsg sets the length of the message that starts at start.
func endMsg(b []byte, start int) []byte {
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

// appendAttr appends an attribute; a nested one gets its length from
// endAttr once its contents follow.
func appendAttr(b []byte, typ uint16, v []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(attrHeaderLen+len(v)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// endAttr sets the length of the nested attribute that starts at start.
func endAttr(b []byte, start int) {
	binary.NativeEndian.PutUint16(b[start:], uint16(len(b)-start))
}

func appendString(b []byte, typ uint16, s string) []byte {
	return appendAttr(b, typ, append([]byte(s), 0))
}
