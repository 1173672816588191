package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// transparent returns a Control function that sets IP_TRANSPARENT (or
// IPV6_TRANSPARENT) and SO_REUSEADDR, so a socket may bind an address that
// is not the router's and accept or send packets for it.
func transparent(network, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			return
		}
		switch network[len(network)-1] {
		case '6':
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		default:
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("transparent socket: %w", serr)
	}
	return nil
}

// network returns "tcp4"/"udp4" or "tcp6"/"udp6" for a's family.
func network(proto string, a netip.Addr) string {
	if a.Is4() {
		return proto + "4"
	}
	return proto + "6"
}

// dialTCP connects to backend, from the client's address and port when
// from is valid (IP_TRANSPARENT), within timeout.
func dialTCP(ctx context.Context, from, backend netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	if from.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(from)
		d.Control = transparent
	}
	c, err := d.DialContext(ctx, network("tcp", backend.Addr()), backend.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// listenTCP binds a TCP listener; any (a "*:port" listen) makes it
// transparent for TPROXY.
func listenTCP(network, addr string, any bool) (*net.TCPListener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	if any {
		lc.Control = transparent
	}
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
