package nfq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Verdicts a Handler gives.
const (
	Drop   = nfqueue.NfDrop
	Accept = nfqueue.NfAccept
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
type Queue struct {
	Num   uint16
	nf    *nfqueue.Nfqueue
	stats *Stats
	log   *slog.Logger
}

// Verdict gives packet id its verdict (Accept or Drop).
func (q *Queue) Verdict(id uint32, verdict int) {
	if err := q.nf.SetVerdict(id, verdict); err != nil {
		q.stats.Errors.Add(1)
		q.log.Warn("nfq: verdict", "queue", q.Num, "id", id, "err", err)
		return
	}
	if verdict == Accept {
		q.stats.Accepted.Add(1)
	} else {
		q.stats.Dropped.Add(1)
	}
}

// VerdictWithMark gives packet id its verdict and sets its packet mark to
// mark: rules after the queue read it (falg's UDP targets).
func (q *Queue) VerdictWithMark(id uint32, verdict int, mark uint32) {
	if err := q.nf.SetVerdictWithMark(id, verdict, int(mark)); err != nil {
		q.stats.Errors.Add(1)
		q.log.Warn("nfq: verdict with mark", "queue", q.Num, "id", id, "mark", mark, "err", err)
		return
	}
	if verdict == Accept {
		q.stats.Accepted.Add(1)
	} else {
		q.stats.Dropped.Add(1)
	}
}

// Run opens the queues, reads them until ctx ends or a reader fails for
// good, then closes them all. It returns nil when ctx ended it.
func Run(ctx context.Context, c Config) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var queues []*Queue
	defer func() {
		for _, q := range queues {
			q.nf.Close() // waits for the reader goroutine
		}
	}()
	var once sync.Once
	fail := func(err error) { once.Do(func() { cancel(err) }) }
	for i := range c.Count {
		q, err := open(ctx, c, c.First+uint16(i), fail)
		if err != nil {
			return err
		}
		queues = append(queues, q)
	}
	c.Log.Info("nfq: reading queues", "first", c.First, "count", c.Count)
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

// setReadBuffer sets the socket's receive buffer past net.core.rmem_max,
// which root may do (SO_RCVBUFFORCE).
func setReadBuffer(c *netlink.Conn, n int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	return serr
}

func open(ctx context.Context, c Config, num uint16, fail func(error)) (*Queue, error) {
	cfg := &nfqueue.Config{
		NfQueue:      num,
		MaxPacketLen: 0xffff,
		MaxQueueLen:  16384, // held packets wait here until their flow is handed over
		Copymode:     nfqueue.NfQnlCopyPacket,
		AfFamily:     unix.AF_UNSPEC,
	}
	if c.FailOpen {
		cfg.Flags = nfqueue.NfQaCfgFlagFailOpen
	}
	nf, err := nfqueue.Open(cfg)
	if err != nil {
		return nil, fmt.Errorf("nfq: open queue %d: %w", num, err)
	}
	// A packet whose message does not fit the socket buffer is lost to
	// falg, and a lost data segment stalls its flow until the client's
	// retransmission timer: make the buffer large. ENOBUFS still reports
	// each overrun; it is counted and reading goes on.
	if err := setReadBuffer(nf.Con, readBuffer); err != nil {
		c.Log.Warn("nfq: queue socket buffer not enlarged", "queue", num, "err", err)
	}
	q := &Queue{Num: num, nf: nf, stats: c.Stats, log: c.Log}
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID == nil {
			c.Stats.Errors.Add(1)
			return 0
		}
		p := Packet{ID: *a.PacketID, Queue: num}
		if a.Payload != nil {
			p.Data = *a.Payload
		}
		if a.Mark != nil {
			p.Mark = *a.Mark
		}
		c.Stats.Queued.Add(1)
		c.Handler.Packet(q, &p)
		return 0
	}
	onErr := func(err error) int {
		switch {
		case ctx.Err() != nil:
			return 1
		case errors.Is(err, unix.ENOBUFS):
			c.Stats.Overruns.Add(1)
			c.Log.Warn("nfq: queue overrun, kernel dropped messages", "queue", num)
			return 0
		}
		var op *netlink.OpError
		if errors.As(err, &op) && (op.Timeout() || op.Temporary()) {
			return 0
		}
		fail(fmt.Errorf("nfq: read queue %d: %w", num, err))
		return 1
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, onErr); err != nil {
		nf.Close()
		return nil, fmt.Errorf("nfq: bind queue %d: %w", num, err)
	}
	return q, nil
}
