package nfq

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Injector sends packets falg builds itself, header and all, from any
// source address. Every packet carries the inject mark, which the ruleset's
// output chain keeps out of conntrack: the flows falg sets up must have no
// conntrack entry until falg creates it.
type Injector struct {
	fd4, fd6 int
}

// NewInjector opens one raw IPPROTO_RAW socket per family, marking what
// they send with mark.
func NewInjector(mark uint32) (*Injector, error) {
	in := &Injector{fd4: -1, fd6: -1}
	for _, f := range []struct {
		family int
		fd     *int
	}{{unix.AF_INET, &in.fd4}, {unix.AF_INET6, &in.fd6}} {
		fd, err := unix.Socket(f.family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			in.Close()
			return nil, fmt.Errorf("nfq: raw socket: %w", err)
		}
		*f.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
			in.Close()
			return nil, fmt.Errorf("nfq: raw socket SO_MARK: %w", err)
		}
	}
	return in, nil
}

// Send transmits pkt, a complete IP packet addressed to dst.
func (in *Injector) Send(pkt []byte, dst netip.Addr) error {
	var err error
	if dst.Is4() {
		err = unix.Sendto(in.fd4, pkt, 0, &unix.SockaddrInet4{Addr: dst.As4()})
	} else {
		err = unix.Sendto(in.fd6, pkt, 0, &unix.SockaddrInet6{Addr: dst.As16()})
	}
	if err != nil {
		return fmt.Errorf("nfq: inject to %s: %w", dst, err)
	}
	return nil
}

// Close closes the sockets.
func (in *Injector) Close() error {
	for _, fd := range []*int{&in.fd4, &in.fd6} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	return nil
}
