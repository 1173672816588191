package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// probePort is a TCP port nothing in a fresh lab listens on: a connection
// refused (a RST from the far host) proves the path works both ways.
const probePort = 9

// probeAttempt bounds one connection attempt; a SYN lost while links come up
// is retried quickly instead of waiting for TCP's one-second retransmit.
const probeAttempt = 200 * time.Millisecond

// waitReady returns when TCP works from every client to every backend and
// from every backend to every client, over IPv4 and IPv6, or when ctx ends.
// It needs no ping binary and no ICMP socket permissions.
func (l *Lab) waitReady(ctx context.Context) error {
	type probe struct {
		from *NS
		to   netip.Addr
	}
	var probes []probe
	for _, c := range l.Clients {
		for _, b := range l.Backends {
			probes = append(probes,
				probe{c, b.Addr4}, probe{c, b.Addr6},
				probe{b, c.Addr4}, probe{b, c.Addr6})
		}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, p := range probes {
		wg.Go(func() {
			if err := p.from.probe(ctx, p.to); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab: not ready: %w", err)
	}
	return nil
}

// probe connects to probePort at to until the connection is refused.
func (n *NS) probe(ctx context.Context, to netip.Addr) error {
	addr := netip.AddrPortFrom(to, probePort).String()
	for {
		actx, cancel := context.WithTimeout(ctx, probeAttempt)
		c, err := n.Dial(actx, "tcp", addr)
		cancel()
		switch {
		case err == nil:
			c.Close()
			return nil // something listens: the path works all the same
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("%s -> %s: %w (last: %w)", n.Name, addr, ctx.Err(), err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			// Unreachable and friends: back off briefly.
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}
