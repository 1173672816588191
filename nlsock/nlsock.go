// Package nlsock opens NETLINK_NETFILTER sockets that block, outside Go's
// runtime poller, for falg's per-flow work with the kernel: nfqueue,
// ctnetlink and nf_tables set elements.
//
// The kernel queues its answer to a netlink request before the request's
// send returns, so the read that follows finds it at once, and a queued
// packet or an event wakes the thread blocked in read directly. A socket
// registered with Go's poller would add to each of them a wake-up of the
// thread waiting in epoll_wait: on the VMs falg was measured on, a fifth of
// its CPU per connection. A receive timeout bounds every read, so that a
// reader can look at a stop flag; Read reports it as
// os.ErrDeadlineExceeded.
//
// A Conn is not safe for concurrent use, except that Write may be called
// while another goroutine is in Read. Close must not be called while a
// Read or Write may be running: the descriptor could be reused.
package nlsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is a blocking NETLINK_NETFILTER socket.
type Conn struct {
	fd int
}

// Dial opens a socket in the calling thread's network namespace whose
// reads give up after timeout.
func Dial(timeout time.Duration) (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink socket: bind: %w", err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink socket: receive timeout: %w", err)
	}
	return &Conn{fd: fd}, nil
}

// Fd is the descriptor, for socket options and recvmmsg.
func (c *Conn) Fd() int { return c.fd }

// Close closes the socket once; later calls do nothing.
func (c *Conn) Close() error {
	if c.fd < 0 {
		return nil
	}
	fd := c.fd
	c.fd = -1
	return unix.Close(fd)
}

// Write sends b, one or more netlink messages, as one datagram to the
// kernel.
func (c *Conn) Write(b []byte) error {
	for {
		_, err := unix.Write(c.fd, b)
		if err != unix.EINTR {
			return err
		}
	}
}

// Read reads the next datagram into b. The timeout gives
// os.ErrDeadlineExceeded; a datagram larger than b gives an error.
func (c *Conn) Read(b []byte) (int, error) {
	for {
		n, _, flags, _, err := unix.Recvmsg(c.fd, b, nil, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, os.ErrDeadlineExceeded
		case err != nil:
			return 0, err
		case flags&unix.MSG_TRUNC != 0:
			return 0, fmt.Errorf("netlink datagram larger than %d bytes", len(b))
		}
		return n, nil
	}
}

// Acks reads answers into buf until the kernel has acknowledged each
// request in seqs, or answered one numbered from first on with an error,
// which it returns as a unix.Errno. Other messages are skipped. Acks
// reorders seqs.
func (c *Conn) Acks(buf []byte, first uint32, seqs ...uint32) error {
	left := len(seqs)
	for left > 0 {
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		for b := buf[:n]; left > 0 && len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b[0:4]))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return fmt.Errorf("malformed netlink answer: length %d of %d", l, len(b))
			}
			typ := binary.NativeEndian.Uint16(b[4:6])
			seq := binary.NativeEndian.Uint32(b[8:12])
			body := b[unix.NLMSG_HDRLEN:l]
			b = b[min((l+3)&^3, len(b)):]
			if typ != unix.NLMSG_ERROR || seq-first >= 1<<31 {
				continue // not an answer to these requests
			}
			if len(body) < 4 {
				return errors.New("netlink error message truncated")
			}
			if errno := -int32(binary.NativeEndian.Uint32(body)); errno != 0 {
				return unix.Errno(errno)
			}
			for i, s := range seqs[:left] {
				if s == seq {
					seqs[i], seqs[left-1] = seqs[left-1], seqs[i]
					left--
					break
				}
			}
		}
	}
	return nil
}
