package dump

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/florianl/go-nflog/v2"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// DefaultGroup is the NFLOG group OpenLive uses when none is given.
const DefaultGroup = 0x7a1

// ErrClosed is returned by Live.Next after Close.
var ErrClosed = errors.New("dump: live capture closed")

// Listen selects packets to and from one address and port.
type Listen struct {
	// Proto is ProtoTCP or ProtoUDP; 0 means both.
	Proto uint8
	// Addr is the address; the zero Addr matches any.
	Addr netip.Addr
	// Port is the port; 0 matches any.
	Port uint16
}

// LiveOptions configures OpenLive.
type LiveOptions struct {
	// Group is the NFLOG group; 0 means DefaultGroup.
	Group uint16
	// Listens selects the TCP and UDP packets to log: those to or from
	// any listen. Without listens every TCP and UDP packet is logged.
	Listens []Listen
	// Mark, if not zero, also logs locally sent packets whose mark has any
	// of these bits (falg's injected packets).
	Mark uint32
	// NetNS is a file descriptor of the network namespace to work in;
	// 0 means the current one.
	NetNS int
	// Buffer is how many packets wait for Next before new ones are
	// dropped (counted by Dropped); 0 means 1024.
	Buffer int
}

// Live reads copies of packets from the kernel. It installs the nftables
// table inet falg_dump with base chains at priority raw - 10 on prerouting
// and output whose rules send matching packets to an NFLOG group; logging
// copies the packet, so falg's own rules and queue still get it.
type Live struct {
	nft     *nftables.Conn
	nf      *nflog.Nflog
	cancel  context.CancelFunc // stops the nflog reader
	pkts    chan *Packet
	done    chan struct{} // closed by Close
	failed  chan struct{} // closed when the reader stops on an error
	err     error         // why the reader stopped; set before failed closes
	dropped atomic.Uint64

	closeOnce sync.Once
	closeErr  error
	watchDone chan struct{} // closed when the ctx watcher exits
}

// OpenLive starts logging packets as o selects and returns the reader.
// A stale falg_dump table is replaced. Close, or cancelling ctx, removes the
// table and stops reading. It needs CAP_NET_ADMIN.
func OpenLive(ctx context.Context, o LiveOptions) (*Live, error) {
	if o.Group == 0 {
		o.Group = DefaultGroup
	}
	if o.Buffer <= 0 {
		o.Buffer = 1024
	}
	for i, l := range o.Listens {
		if l.Proto != 0 && l.Proto != ProtoTCP && l.Proto != ProtoUDP {
			return nil, fmt.Errorf("dump: listens[%d]: protocol %d is neither TCP nor UDP", i, l.Proto)
		}
	}
	var nftOpts []nftables.ConnOption
	if o.NetNS != 0 {
		nftOpts = append(nftOpts, nftables.WithNetNSFd(o.NetNS))
	}
	nft, err := nftables.New(nftOpts...)
	if err != nil {
		return nil, fmt.Errorf("dump: nftables: %w", err)
	}
	nf, err := nflog.Open(&nflog.Config{
		NetNS:    o.NetNS,
		Group:    o.Group,
		Copymode: nflog.CopyPacket,
		Bufsize:  0xffff,
		QThresh:  1, // deliver every packet at once; the kernel default batches up to 1 s
	})
	if err != nil {
		return nil, fmt.Errorf("dump: nflog group %d: %w", o.Group, err)
	}
	_ = nf.Con.SetReadBuffer(1 << 20) // best effort; a small buffer only drops more

	l := &Live{
		nft:       nft,
		nf:        nf,
		pkts:      make(chan *Packet, o.Buffer),
		done:      make(chan struct{}),
		failed:    make(chan struct{}),
		watchDone: make(chan struct{}),
	}
	rctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	if err := nf.RegisterWithErrorFunc(rctx, l.hook, l.readError(rctx)); err != nil {
		cancel()
		nf.Close()
		return nil, fmt.Errorf("dump: nflog group %d: %w", o.Group, err)
	}
	if err := installTable(nft, o); err != nil {
		cancel()
		nf.Close()
		return nil, err
	}
	go func() {
		defer close(l.watchDone)
		select {
		case <-ctx.Done():
			if err := l.close(); err != nil {
				slog.Warn("dump: close on context end", "err", err)
			}
		case <-l.done:
		}
	}()
	return l, nil
}

// hook receives one logged packet from the nflog reader.
func (l *Live) hook(a nflog.Attribute) int {
	if a.Payload == nil {
		return 0
	}
	// The kernel stamps only some packets (not those sent locally); one
	// clock for all keeps the times in the order of the lines.
	p := &Packet{Time: time.Now(), Data: append([]byte(nil), *a.Payload...)}
	if a.Hook != nil {
		p.Hook = hookName(*a.Hook)
	}
	select {
	case l.pkts <- p:
	default:
		l.dropped.Add(1)
	}
	return 0
}

// readError decides whether the nflog reader goes on after err.
func (l *Live) readError(ctx context.Context) nflog.ErrorFunc {
	return func(err error) int {
		if ctx.Err() != nil {
			return 1
		}
		if errors.Is(err, unix.ENOBUFS) {
			l.dropped.Add(1) // the kernel dropped at least one packet
			return 0
		}
		l.err = fmt.Errorf("dump: nflog read: %w", err)
		close(l.failed)
		return 1
	}
}

// Next returns the next logged packet. It blocks until one arrives, ctx
// ends, the reader fails, or Live is closed (ErrClosed).
func (l *Live) Next(ctx context.Context) (*Packet, error) {
	select {
	case p := <-l.pkts:
		return p, nil
	default:
	}
	select {
	case p := <-l.pkts:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.failed:
		return nil, l.err
	case <-l.done:
		return nil, ErrClosed
	}
}

// Dropped returns how many packets were lost because Next was not called
// fast enough (kernel socket overruns count once each).
func (l *Live) Dropped() uint64 { return l.dropped.Load() }

// Close removes the falg_dump table and stops reading. It is safe to call
// more than once and concurrently with Next.
func (l *Live) Close() error {
	err := l.close()
	<-l.watchDone
	return err
}

func (l *Live) close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = removeTable(l.nft)
		l.cancel()
		if err := l.nf.Close(); err != nil && l.closeErr == nil {
			l.closeErr = fmt.Errorf("dump: nflog close: %w", err)
		}
	})
	return l.closeErr
}

func hookName(h uint8) string {
	switch h {
	case unix.NF_INET_PRE_ROUTING:
		return "prerouting"
	case unix.NF_INET_LOCAL_IN:
		return "input"
	case unix.NF_INET_FORWARD:
		return "forward"
	case unix.NF_INET_LOCAL_OUT:
		return "output"
	case unix.NF_INET_POST_ROUTING:
		return "postrouting"
	}
	return fmt.Sprintf("hook%d", h)
}
