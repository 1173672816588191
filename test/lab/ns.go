package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Path returns the namespace's file under /run/netns.
func (n *NS) Path() string { return filepath.Join(netnsDir, n.Name) }

// String returns the namespace name.
func (n *NS) String() string { return n.Name }

// how fn ended inside Do.
const (
	endGoexit = iota // runtime.Goexit, e.g. t.FailNow
	endReturn
	endPanic
)

// Do runs fn on an OS thread switched into the namespace and waits for it.
//
// fn runs on a fresh goroutine locked to its thread, not on the caller's:
// if switching the thread back fails, that goroutine exits still locked,
// so Go discards the thread and neither the caller nor any other goroutine
// ever runs in the wrong namespace. A panic in fn is re-raised in the caller
// and runtime.Goexit (t.FailNow) is repeated in the caller, after the thread
// has been restored. Goroutines that fn starts run in the original
// namespace. Sockets created by fn stay in the lab namespace for their life.
// Use literal addresses: name resolution may run on other threads.
func (n *NS) Do(fn func() error) error {
	type result struct {
		end   int
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() { done <- r }()
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			r.end, r.err = endReturn, fmt.Errorf("lab: %s: open own netns: %w", n.Name, err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(n.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			r.end, r.err = endReturn, fmt.Errorf("lab: %s: open: %w", n.Name, err)
			return
		}
		err = unix.Setns(target, unix.CLONE_NEWNET)
		unix.Close(target)
		if err != nil {
			runtime.UnlockOSThread()
			r.end, r.err = endReturn, fmt.Errorf("lab: %s: setns: %w", n.Name, err)
			return
		}
		defer func() {
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				// Stay locked: the thread dies with this goroutine.
				r.err = errors.Join(r.err, fmt.Errorf("lab: %s: restore netns: %w", n.Name, err))
				return
			}
			runtime.UnlockOSThread()
		}()
		defer func() {
			if p := recover(); p != nil {
				r.end, r.panic = endPanic, p
			}
		}()
		r.end = endGoexit
		r.err = fn()
		r.end = endReturn
	}()
	r := <-done
	switch r.end {
	case endPanic:
		panic(r.panic)
	case endGoexit:
		runtime.Goexit()
	}
	return r.err
}

// Listen is net.Listen inside the namespace.
func (n *NS) Listen(network, addr string) (ln net.Listener, err error) {
	err = n.Do(func() error {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket is net.ListenPacket inside the namespace.
func (n *NS) ListenPacket(network, addr string) (pc net.PacketConn, err error) {
	err = n.Do(func() error {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Dial connects from inside the namespace, like net.Dialer.DialContext.
func (n *NS) Dial(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = n.Do(func() error {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Command returns a command that runs name inside the namespace through
// `ip netns exec`, which execs it in place: cmd.Process is the program itself.
// The caller owns the process; Lab.Start makes one the lab owns. ctx kills
// the process as in exec.CommandContext.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	ip := "ip"
	if n.lab != nil && n.lab.ip != "" {
		ip = n.lab.ip
	}
	return exec.CommandContext(ctx, ip, append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs name inside the namespace and returns its combined output. The
// error carries the command line and its output.
func (n *NS) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("lab: %s: %s: %w: %s", n.Name,
			strings.Join(append([]string{name}, args...), " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}
