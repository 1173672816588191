package seqnat

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// recvBufSize holds the largest datagram a ctnetlink dump sends.
const recvBufSize = 1 << 16

// isTimeout reports whether err is a read deadline expiring.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// blockingSock is a netlink socket outside Go's runtime poller. The kernel
// queues its answer to a request before the request's send returns, so the
// read that follows finds it at once; and an event wakes the thread
// blocked in read directly. A socket registered with the poller would add,
// to each answer or event, a wake-up of the thread waiting in epoll, which
// on a VM costs more than the request. A receive timeout bounds each read.
type blockingSock struct {
	fd  int
	buf []byte
}

// dialBlocking opens a NETLINK_NETFILTER socket in the current thread's
// network namespace whose reads give up after timeout.
func dialBlocking(timeout time.Duration) (*blockingSock, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, err
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind: %w", err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set receive timeout: %w", err)
	}
	return &blockingSock{fd: fd, buf: make([]byte, recvBufSize)}, nil
}

// close closes the socket once; later calls do nothing.
func (s *blockingSock) close() error {
	if s.fd < 0 {
		return nil
	}
	fd := s.fd
	s.fd = -1
	return unix.Close(fd)
}

// write sends b as one datagram to the kernel.
func (s *blockingSock) write(b []byte) error {
	for {
		_, err := unix.Write(s.fd, b)
		switch err {
		case nil:
			return nil
		case unix.EINTR:
			continue
		}
		return fmt.Errorf("send: %w", err)
	}
}

// read returns the next datagram; the slice is valid until the next read.
func (s *blockingSock) read() ([]byte, error) {
	for {
		n, _, flags, _, err := unix.Recvmsg(s.fd, s.buf, nil, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return nil, fmt.Errorf("receive: %w", os.ErrDeadlineExceeded)
		case err != nil:
			return nil, fmt.Errorf("receive: %w", err)
		case flags&unix.MSG_TRUNC != 0:
			return nil, fmt.Errorf("receive: datagram larger than %d bytes", len(s.buf))
		}
		return s.buf[:n], nil
	}
}
