package seqnat

import (
	"errors"
	"fmt"
	"os"
	"time"

	"falg/nlsock"
)

// recvBufSize holds the largest datagram a ctnetlink dump sends.
const recvBufSize = 1 << 16

// sock is a blocking netlink socket (nlsock) with the buffer its datagrams
// are read into.
type sock struct {
	*nlsock.Conn
	buf []byte
}

// dial opens a sock in the calling thread's network namespace whose reads
// give up after timeout.
func dial(timeout time.Duration) (*sock, error) {
	c, err := nlsock.Dial(timeout)
	if err != nil {
		return nil, err
	}
	return &sock{Conn: c, buf: make([]byte, recvBufSize)}, nil
}

// write sends b as one datagram to the kernel.
func (s *sock) write(b []byte) error {
	if err := s.Write(b); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// read returns the next datagram; the slice is valid until the next read.
func (s *sock) read() ([]byte, error) {
	n, err := s.Read(s.buf)
	if err != nil {
		return nil, fmt.Errorf("receive: %w", err)
	}
	return s.buf[:n], nil
}

// isTimeout reports whether err is a read timing out.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
