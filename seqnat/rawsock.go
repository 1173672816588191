package seqnat

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// recvBufSize holds the largest datagram a ctnetlink dump sends.
const recvBufSize = 1 << 16

// rawSock reads and writes whole datagrams on a netlink socket opened by
// mdlayher/netlink, through the runtime poller (so deadlines work) and
// without allocating per call. It is not safe for concurrent use.
type rawSock struct {
	nl  *netlink.Conn
	rc  syscall.RawConn
	buf []byte // last datagram read

	out     []byte
	to      unix.SockaddrNetlink
	n       int
	rflags  int
	err     error
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
}

// dialRaw opens a NETLINK_NETFILTER socket in the current thread's network
// namespace.
func dialRaw() (*rawSock, error) {
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, err
	}
	rc, err := nl.SyscallConn()
	if err != nil {
		nl.Close()
		return nil, err
	}
	s := &rawSock{nl: nl, rc: rc, buf: make([]byte, recvBufSize), to: unix.SockaddrNetlink{Family: unix.AF_NETLINK}}
	s.readFn = func(fd uintptr) bool {
		for {
			s.n, _, s.rflags, _, s.err = unix.Recvmsg(int(fd), s.buf, nil, 0)
			if s.err != unix.EINTR {
				return s.err != unix.EAGAIN
			}
		}
	}
	s.writeFn = func(fd uintptr) bool {
		for {
			s.err = unix.Sendto(int(fd), s.out, 0, &s.to)
			if s.err != unix.EINTR {
				return s.err != unix.EAGAIN
			}
		}
	}
	return s, nil
}

func (s *rawSock) close() error { return s.nl.Close() }

// write sends b as one datagram to the kernel.
func (s *rawSock) write(b []byte) error {
	s.out = b
	err := s.rc.Write(s.writeFn)
	s.out = nil
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if s.err != nil {
		return fmt.Errorf("send: %w", s.err)
	}
	return nil
}

// read waits until deadline (zero = forever) for one datagram and returns
// it; the slice is valid until the next read.
func (s *rawSock) read(deadline time.Time) ([]byte, error) {
	if err := s.nl.SetReadDeadline(deadline); err != nil {
		return nil, fmt.Errorf("receive: %w", err)
	}
	if err := s.rc.Read(s.readFn); err != nil {
		return nil, fmt.Errorf("receive: %w", err)
	}
	if s.err != nil {
		return nil, fmt.Errorf("receive: %w", s.err)
	}
	if s.rflags&unix.MSG_TRUNC != 0 {
		return nil, fmt.Errorf("receive: datagram larger than %d bytes", len(s.buf))
	}
	return s.buf[:s.n], nil
}

// isTimeout reports whether err is a read deadline expiring.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// blockingSock is a netlink socket outside Go's runtime poller, for
// request and answer. The kernel queues its answer to a request before the
// request's send returns, so the read that follows finds it at once: a
// socket registered with the poller would only add a wake-up of the
// thread waiting in epoll for each answer, which on a VM costs more than
// the request. A receive timeout bounds a read all the same.
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
