package seqnat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// RequestTimeout bounds how long a Conn waits for each reply datagram.
const RequestTimeout = 5 * time.Second

// Conn is a ctnetlink request socket (NETLINK_NETFILTER) in the network
// namespace it was dialed in. It is safe for concurrent use; requests are
// serialized, so give each busy worker its own Conn.
type Conn struct {
	mu   sync.Mutex
	sock *sock
	enc  encoder
	seq  uint32
}

// Dial opens a ctnetlink socket in the current thread's network namespace.
func Dial() (*Conn, error) {
	s, err := dial(RequestTimeout)
	if err != nil {
		return nil, fmt.Errorf("seqnat: dial: %w", err)
	}
	return &Conn{sock: s, seq: uint32(time.Now().UnixNano())}, nil
}

// Close closes the socket.
func (c *Conn) Close() error {
	c.mu.Lock() // no request may be reading the descriptor
	defer c.mu.Unlock()
	if err := c.sock.Close(); err != nil {
		return fmt.Errorf("seqnat: close: %w", err)
	}
	return nil
}

// Create installs f as a confirmed conntrack entry (IPCTNL_MSG_CT_NEW with
// NLM_F_CREATE|NLM_F_EXCL). An entry with the same original tuple makes it
// fail with an error matching unix.EEXIST.
func (c *Conn) Create(f Flow) error {
	fam, err := f.validate()
	if err != nil {
		return fmt.Errorf("seqnat: create %s: %w", f, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enc.create(&f, fam)
	flags := netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl
	if err := c.request(ctMsgNew, flags, nil); err != nil {
		return fmt.Errorf("seqnat: create %s: %w", f, err)
	}
	return nil
}

// Delete removes the entry whose original tuple is orig in the default zone.
// A missing entry gives an error matching unix.ENOENT.
func (c *Conn) Delete(proto uint8, orig Tuple) error {
	return c.DeleteZone(0, proto, orig)
}

// DeleteZone is Delete for conntrack zone zone.
func (c *Conn) DeleteZone(zone uint16, proto uint8, orig Tuple) error {
	fam, err := tupleFamily(orig)
	if err != nil {
		return fmt.Errorf("seqnat: delete %s %s: %w", protoName(proto), orig, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enc.key(fam, zone, proto, orig)
	if err := c.request(ctMsgDelete, netlink.Request|netlink.Acknowledge, nil); err != nil {
		return fmt.Errorf("seqnat: delete %s %s: %w", protoName(proto), orig, err)
	}
	return nil
}

// Get returns the entry whose original tuple is orig in the default zone.
// A missing entry gives unix.ENOENT itself, without context: it is the
// common answer of a lookup made before each hand-over, and formatting it
// cost falg more than the lookup's own work.
func (c *Conn) Get(proto uint8, orig Tuple) (Entry, error) {
	return c.GetZone(0, proto, orig)
}

// GetZone is Get for conntrack zone zone.
func (c *Conn) GetZone(zone uint16, proto uint8, orig Tuple) (Entry, error) {
	var e Entry
	fam, err := tupleFamily(orig)
	if err != nil {
		return e, fmt.Errorf("seqnat: get %s %s: %w", protoName(proto), orig, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enc.key(fam, zone, proto, orig)
	found := false
	// Without an acknowledgement requested, the kernel answers with the
	// entry or an error, nothing more: one datagram to read, not two. (The
	// entry may carry NLM_F_MULTI without a DONE following it.)
	err = c.request(ctMsgGet, netlink.Request, func(b []byte) error {
		var derr error
		e, derr = decodeEntry(b)
		found = derr == nil
		return derr
	})
	if err == nil && !found || errors.Is(err, unix.ENOENT) {
		return Entry{}, unix.ENOENT
	}
	if err != nil {
		return Entry{}, fmt.Errorf("seqnat: get %s %s: %w", protoName(proto), orig, err)
	}
	return e, nil
}

// List dumps the entries of all families whose mark, masked with mask,
// equals mark. The kernel does the filtering. List(0, 0) returns every entry.
func (c *Conn) List(mark, mask uint32) ([]Entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enc.dump(mark&mask, mask)
	var out []Entry
	err := c.request(ctMsgGet, netlink.Request|netlink.Dump, func(b []byte) error {
		e, err := decodeEntry(b)
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("seqnat: list mark %#x/%#x: %w", mark, mask, err)
	}
	return out, nil
}

// request sends the message in c.enc and reads replies with its sequence
// number until the kernel acknowledges it, reports an error, ends a dump,
// or, for a request that asks for neither an acknowledgement nor a dump,
// answers it. Each data message body goes to each. c.mu must be held.
func (c *Conn) request(msg uint8, flags netlink.HeaderFlags, each func([]byte) error) error {
	c.seq++
	seq := c.seq
	if err := c.sock.write(c.enc.finish(nfnlSubsysCTNetlink<<8|uint16(msg), uint16(flags), seq)); err != nil {
		return err
	}
	var eachErr error
	for {
		dgram, err := c.sock.read()
		if err != nil {
			return err
		}
		done, err := walkMessages(dgram, func(h nlHeader, body []byte) (bool, error) {
			if h.seq != seq {
				return false, nil // a late reply to an abandoned request
			}
			switch h.typ {
			case unix.NLMSG_NOOP:
				return false, nil
			case unix.NLMSG_ERROR, unix.NLMSG_DONE:
				if len(body) < 4 {
					if h.typ == unix.NLMSG_DONE {
						return true, nil
					}
					return true, errors.New("short netlink error message")
				}
				if errno := -int32(binary.NativeEndian.Uint32(body)); errno != 0 {
					return true, unix.Errno(errno)
				}
				return true, nil
			case unix.NLMSG_OVERRUN:
				return true, errors.New("netlink overrun")
			}
			if each != nil && eachErr == nil {
				eachErr = each(body)
			}
			// A request that is neither a dump nor acknowledged gets one
			// message back.
			return flags&(netlink.Dump|netlink.Acknowledge) == 0, nil
		})
		if err != nil {
			return err
		}
		if done {
			return eachErr
		}
	}
}

// nlHeader is the part of struct nlmsghdr this package looks at.
type nlHeader struct {
	typ   uint16
	flags uint16
	seq   uint32
}

// walkMessages calls fn for each netlink message in a datagram until fn
// reports done or fails.
func walkMessages(b []byte, fn func(h nlHeader, body []byte) (done bool, err error)) (bool, error) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return false, fmt.Errorf("malformed netlink message: length %d of %d", l, len(b))
		}
		h := nlHeader{
			typ:   binary.NativeEndian.Uint16(b[4:6]),
			flags: binary.NativeEndian.Uint16(b[6:8]),
			seq:   binary.NativeEndian.Uint32(b[8:12]),
		}
		done, err := fn(h, b[unix.NLMSG_HDRLEN:l])
		if done || err != nil {
			return done, err
		}
		next := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return false, nil
}
