package relay

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// spliceChunk is how many bytes one ReadFrom may splice before progress is
// recorded and the deadline renewed.
const spliceChunk = 1 << 20

// hookBuf is the size of the user-space buffer of an intercepted direction.
const hookBuf = 32 << 10

var hookBufs = sync.Pool{New: func() any { return new([hookBuf]byte) }}

var errIdle = errors.New("idle timeout")

// pipe copies c <-> b until both directions have ended. A direction that
// reads EOF half-closes its destination; an error in either direction
// (a reset, the idle timeout, a Hook error) resets both sockets.
func (t *tcpService) pipe(c, b *net.TCPConn, hook Hook) {
	s := t.srv
	var last atomic.Int64 // unix nanoseconds of the last progress either way
	last.Store(time.Now().UnixNano())
	var once sync.Once
	abort := func(err error) {
		once.Do(func() {
			if errors.Is(err, errIdle) {
				s.stats.Idle.Add(1)
			}
			s.stats.Resets.Add(1)
			s.log.Debug("relay: flow reset", "service", t.cfg.Name, "client", c.RemoteAddr(), "err", err)
			resetBoth(c, b)
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := t.copyDir(b, c, ToBackend, hook, &last); err != nil {
			abort(err)
		}
	}()
	if err := t.copyDir(c, b, ToClient, hook, &last); err != nil {
		abort(err)
	}
	<-done
}

// copyDir copies src to dst until src's EOF (then half-closes dst) or an
// error. Without a hook it splices; with one it reads into a buffer.
//
// Idle detection: reads wait at most a quarter of Options.Idle, then record
// what moved; a read that times out when neither direction recorded
// progress for Idle ends the flow. A write is only bounded (by Idle) on the
// hook path: a spliced write that times out would lose the bytes in the
// kernel pipe, so a spliced direction whose peer stops reading is ended by
// the other direction's idle check or by the peer.
func (t *tcpService) copyDir(dst, src *net.TCPConn, dir Direction, hook Hook, last *atomic.Int64) error {
	idle := t.srv.opts.Idle
	tick := idle / 4
	count := &t.srv.stats.ToBackend
	if dir == ToClient {
		count = &t.srv.stats.ToClient
	}
	progress := func(n int) {
		if n > 0 {
			last.Store(time.Now().UnixNano())
			count.Add(uint64(n))
		}
	}
	stalled := func() bool { return time.Since(time.Unix(0, last.Load())) >= idle }
	if hook == nil {
		lr := io.LimitedReader{R: src}
		for {
			src.SetReadDeadline(time.Now().Add(tick))
			lr.N = spliceChunk
			n, err := dst.ReadFrom(&lr) // splice(2): both are TCP sockets
			progress(int(n))
			switch {
			case err != nil && isTimeout(err):
				if stalled() {
					return errIdle
				}
			case err != nil:
				return err
			case lr.N > 0: // EOF before the chunk was full
				return dst.CloseWrite()
			}
		}
	}
	buf := hookBufs.Get().(*[hookBuf]byte)
	defer hookBufs.Put(buf)
	for {
		src.SetReadDeadline(time.Now().Add(tick))
		n, err := src.Read(buf[:])
		if n > 0 {
			last.Store(time.Now().UnixNano())
			out, herr := hook.Chunk(dir, buf[:n])
			if herr != nil {
				return herr
			}
			for len(out) > 0 {
				dst.SetWriteDeadline(time.Now().Add(tick))
				m, werr := dst.Write(out)
				progress(m)
				out = out[m:]
				if werr != nil && (!isTimeout(werr) || stalled()) {
					if isTimeout(werr) {
						return errIdle
					}
					return werr
				}
			}
		}
		switch {
		case err == io.EOF:
			return dst.CloseWrite()
		case err != nil && isTimeout(err):
			if stalled() {
				return errIdle
			}
		case err != nil:
			return err
		}
	}
}
