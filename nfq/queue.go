package nfq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"falg/nlsock"
)

// Verdicts a Handler gives.
const (
	Drop   = 0 // NF_DROP
	Accept = 1 // NF_ACCEPT
)

// Packet is one packet the kernel queued to falg.
type Packet struct {
	// ID names the packet in its queue's verdicts.
	ID uint32
	// Queue is the number of the queue it came from.
	Queue uint16
	// Mark is the packet mark.
	Mark uint32
	// Data starts at the IP header. It is only valid during the Handler
	// call: keep a copy to hold on to it.
	Data []byte
}

// Handler decides what becomes of queued packets. Packet is called on the
// queue's reader goroutine; it must give every packet exactly one verdict,
// at once or later (from any goroutine), through q.
type Handler interface {
	Packet(q *Queue, p *Packet)
}

// BatchEnder is a Handler that wants to know when a reader has handed it a
// whole batch of packets and sent the batch's verdicts: work it defers to
// then is done once per batch, on the reader's thread, with no goroutine
// to wake.
type BatchEnder interface {
	BatchEnd(q *Queue)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(q *Queue, p *Packet)

// Packet calls f.
func (f HandlerFunc) Packet(q *Queue, p *Packet) { f(q, p) }

// Stats counts what the queue readers saw. All fields are updated
// atomically and may be read at any time.
type Stats struct {
	Queued   atomic.Uint64 // packets received from the kernel
	Accepted atomic.Uint64 // accept verdicts given
	Dropped  atomic.Uint64 // drop verdicts given
	Overruns atomic.Uint64 // ENOBUFS: the kernel dropped messages for us
	Errors   atomic.Uint64 // failed verdicts and unparsable messages
}

// Config says which queues to read.
type Config struct {
	First    uint16 // first queue number
	Count    int    // queues First..First+Count-1, one reader each
	FailOpen bool   // kernel accepts packets when a queue is full
	Handler  Handler
	Stats    *Stats
	Log      *slog.Logger
	// Ready, if set, is called once every queue is bound.
	Ready func()
}

// Queue is one open nfqueue with its reader.
//
// The reader takes up to batchSize queued packets per recvmmsg(2) into
// buffers it reuses, and the verdicts given while it hands a batch to the
// Handler leave together in one write(2) when the batch is done: at a high
// packet rate a system call carries many packets each way, and no packet
// costs an allocation. A verdict given from another goroutine (a held
// packet released by a hand-over) is sent at once, or with the batch being
// handled when there is one. The socket is blocking: the reader waits in
// recvmmsg itself, one system call per wake-up instead of a failed read,
// an epoll_wait and a read through Go's poller; a receive timeout
// (pollInterval) lets it see that the queue is being closed.
type Queue struct {
	Num   uint16
	sock  *nlsock.Conn
	stats *Stats
	log   *slog.Logger

	bufs [][]byte
	iovs []unix.Iovec
	msgs []mmsghdr

	mu       sync.Mutex
	out      []byte // verdict messages not sent yet
	batching bool   // the reader is handing a batch to the Handler
	closed   bool
}

// Sizes of the reader's buffers: batchSize messages of slotSize bytes, each
// room for a packet copied whole (copyRange) and its attributes.
const (
	batchSize = 32
	copyRange = 0xffff
	slotSize  = copyRange + 1024
	// flushAt sends the verdicts gathered so far even during a batch, far
	// below the socket's send buffer.
	flushAt = 32 << 10
	// pollInterval is how long the reader waits in recvmmsg before it
	// looks whether the queue is being closed.
	pollInterval = 100 * time.Millisecond
)

// mmsghdr is struct mmsghdr of recvmmsg(2).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// Verdict gives packet id its verdict (Accept or Drop).
func (q *Queue) Verdict(id uint32, verdict int) {
	q.verdict(id, verdict, false, 0)
}

// VerdictWithMark gives packet id its verdict and sets its packet mark to
// mark: rules after the queue read it (falg's UDP targets).
func (q *Queue) VerdictWithMark(id uint32, verdict int, mark uint32) {
	q.verdict(id, verdict, true, mark)
}

func (q *Queue) verdict(id uint32, verdict int, setMark bool, mark uint32) {
	if verdict == Accept {
		q.stats.Accepted.Add(1)
	} else {
		q.stats.Dropped.Add(1)
	}
	q.mu.Lock()
	q.out = appendVerdict(q.out, q.Num, id, uint32(verdict), setMark, mark)
	if !q.batching || len(q.out) >= flushAt {
		q.flushLocked()
	}
	q.mu.Unlock()
}

// flushLocked sends the verdicts gathered in q.out in one message. The
// kernel answers only a failed one, with an error the reader logs.
func (q *Queue) flushLocked() {
	if len(q.out) == 0 {
		return
	}
	if q.closed {
		q.out = q.out[:0]
		return
	}
	if err := q.sock.Write(q.out); err != nil {
		n := uint64(len(q.out) / verdictMsgLen) // about: marked verdicts are longer
		q.stats.Errors.Add(max(n, 1))
		q.log.Warn("nfq: send verdicts", "queue", q.Num, "bytes", len(q.out), "err", err)
	}
	q.out = q.out[:0]
}

// Run opens the queues, reads them until ctx ends or a reader fails for
// good, then closes them all. It returns nil when ctx ended it.
func Run(ctx context.Context, c Config) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		queues []*Queue
		wg     sync.WaitGroup
	)
	defer func() {
		for _, q := range queues {
			q.stop()
		}
		wg.Wait() // at most pollInterval
		for _, q := range queues {
			q.sock.Close()
		}
	}()
	for i := range c.Count {
		q, err := open(c, c.First+uint16(i))
		if err != nil {
			return err
		}
		queues = append(queues, q)
		wg.Go(func() {
			if err := q.read(c.Handler); err != nil && ctx.Err() == nil {
				cancel(err)
			}
		})
	}
	c.Log.Info("nfq: reading queues", "first", c.First, "count", c.Count, "batch", batchSize)
	if c.Ready != nil {
		c.Ready()
	}
	<-ctx.Done()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// readBuffer is the receive buffer of each queue's netlink socket.
const readBuffer = 16 << 20

// open binds queue num to a new netlink socket, configured to copy whole
// packets, hold up to 16384 of them, and (with FailOpen) let the kernel
// accept packets when the queue is full.
func open(c Config, num uint16) (*Queue, error) {
	sock, err := nlsock.Dial(pollInterval)
	if err != nil {
		return nil, fmt.Errorf("nfq: open queue %d: %w", num, err)
	}
	q := &Queue{Num: num, sock: sock, stats: c.Stats, log: c.Log}
	if err := q.setup(c); err != nil {
		sock.Close()
		return nil, fmt.Errorf("nfq: queue %d: %w", num, err)
	}
	q.bufs = make([][]byte, batchSize)
	q.iovs = make([]unix.Iovec, batchSize)
	q.msgs = make([]mmsghdr, batchSize)
	for i := range q.msgs {
		q.bufs[i] = make([]byte, slotSize)
		q.iovs[i].Base = &q.bufs[i][0]
		q.iovs[i].SetLen(slotSize)
		q.msgs[i].hdr.Iov = &q.iovs[i]
		q.msgs[i].hdr.SetIovlen(1)
	}
	return q, nil
}

// setup sets the socket's buffer and configures the queue, each step
// acknowledged by the kernel.
func (q *Queue) setup(c Config) error {
	// A packet whose message does not fit the socket buffer is lost to
	// falg, and a lost data segment stalls its flow until the client's
	// retransmission timer: make the buffer large, past net.core.rmem_max,
	// which root may do. ENOBUFS still reports each overrun; it is counted
	// and reading goes on.
	if err := unix.SetsockoptInt(q.sock.Fd(), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, readBuffer); err != nil {
		c.Log.Warn("nfq: queue socket buffer not enlarged", "queue", q.Num, "err", err)
	}
	var flags uint32
	if c.FailOpen {
		flags = cfgFlagFailOpn
	}
	steps := []struct {
		what string
		body []byte
	}{
		{"bind", configMessage(q.Num, attr(attrCfgCmd, []byte{cfgCmdBind, 0, 0, 0}))},
		{"set copy mode", configMessage(q.Num, attr(attrCfgParams, append(be32(copyRange), copyPacket)))},
		{"set length and flags", configMessage(q.Num,
			// held packets wait in the queue until their flow is handed over
			attr(attrCfgMaxLen, be32(16384)),
			attr(attrCfgFlags, be32(flags)), attr(attrCfgMask, be32(cfgFlagFailOpn)))},
	}
	buf := make([]byte, 4096)
	for i, s := range steps {
		seq := uint32(i + 1)
		if err := q.sock.Write(appendConfig(nil, seq, s.body)); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
		if err := q.sock.Acks(buf, seq, seq); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}

// stop makes the reader return within pollInterval and drops the verdicts
// given from then on; the kernel drops the packets still queued when the
// socket closes.
func (q *Queue) stop() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}

// read hands every queued packet to h until the socket is closed, which
// returns nil, or fails, which returns the error.
func (q *Queue) read(h Handler) error {
	var p Packet
	be, _ := h.(BatchEnder)
	for {
		n, err := q.receive()
		q.mu.Lock()
		closed := q.closed
		q.mu.Unlock()
		switch {
		case closed:
			return nil
		case err == unix.EAGAIN || err == unix.EINTR:
			continue // pollInterval passed
		case err == unix.ENOBUFS:
			q.stats.Overruns.Add(1)
			q.log.Warn("nfq: queue overrun, kernel dropped messages", "queue", q.Num)
			continue
		case err != nil:
			return fmt.Errorf("nfq: read queue %d: %w", q.Num, err)
		}
		q.mu.Lock()
		q.batching = true
		q.mu.Unlock()
		for i := range n {
			q.handle(h, &p, q.bufs[i][:q.msgs[i].len], q.msgs[i].hdr.Flags)
		}
		q.mu.Lock()
		q.batching = false
		q.flushLocked()
		q.mu.Unlock()
		if be != nil {
			be.BatchEnd(q)
		}
	}
}

// receive waits up to pollInterval for queued packets and takes as many
// as are there, up to batchSize, in one recvmmsg(2).
func (q *Queue) receive() (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(q.sock.Fd()), uintptr(unsafe.Pointer(&q.msgs[0])),
		uintptr(len(q.msgs)), unix.MSG_WAITFORONE, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// handle passes the packets of one datagram to h, and logs the kernel's
// errors about verdicts.
func (q *Queue) handle(h Handler, p *Packet, b []byte, flags int32) {
	if flags&unix.MSG_TRUNC != 0 {
		q.stats.Errors.Add(1)
		q.log.Warn("nfq: queue message truncated", "queue", q.Num, "len", len(b))
		return
	}
	for len(b) > 0 {
		m, rest, err := nextMessage(b)
		if err != nil {
			q.stats.Errors.Add(1)
			q.log.Warn("nfq: unparsable queue message", "queue", q.Num, "err", err)
			return
		}
		b = rest
		switch m.typ {
		case msgPacket:
			*p = Packet{Queue: q.Num}
			if haveID, err := parsePacket(m.body, p); err != nil {
				q.stats.Errors.Add(1)
				q.log.Warn("nfq: unparsable queued packet", "queue", q.Num, "id", p.ID, "err", err)
				if haveID {
					q.Verdict(p.ID, Drop)
				}
				continue
			}
			q.stats.Queued.Add(1)
			h.Packet(q, p)
		case unix.NLMSG_ERROR:
			errno, seq, err := parseError(m.body)
			if err == nil && errno == 0 {
				continue // an acknowledgement
			}
			q.stats.Errors.Add(1)
			q.log.Warn("nfq: kernel refused a verdict", "queue", q.Num, "id", seq, "err", cmp.Or(err, error(errno)))
		}
	}
}
