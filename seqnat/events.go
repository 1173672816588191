package seqnat

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Group is a ctnetlink multicast group.
type Group uint32

// Conntrack event groups (enum nfnetlink_groups).
const (
	GroupNew     Group = groupCTNew
	GroupUpdate  Group = groupCTUpdate
	GroupDestroy Group = groupCTDestroy
)

// EventType says what happened to an entry.
type EventType uint8

// Event types.
const (
	EventNew     EventType = iota + 1 // entry created
	EventUpdate                       // status, protoinfo or mark changed
	EventDestroy                      // entry deleted or expired
)

// String returns "new", "update" or "destroy".
func (t EventType) String() string {
	switch t {
	case EventNew:
		return "new"
	case EventUpdate:
		return "update"
	case EventDestroy:
		return "destroy"
	}
	return fmt.Sprintf("event-%d", uint8(t))
}

// Event is one conntrack event. Destroy events carry the tuples, ID, status,
// mark and, with accounting on, the final counters.
type Event struct {
	Type EventType
	Entry
}

// eventBufSize is the socket receive buffer Listen asks for.
const eventBufSize = 4 << 20

// Events is a ctnetlink multicast subscription in the network namespace it
// was opened in. It starts no goroutine: the owner calls Receive in a loop
// and Close when done, not during a Receive. Receive is not safe for
// concurrent use.
//
// The socket is blocking and outside Go's poller, like Conn's: an event
// wakes the thread waiting in Receive directly, rather than the thread in
// epoll_wait that would then wake it. Receive looks at its context every
// eventPoll.
type Events struct {
	sock *sock
}

// eventPoll is how long Receive waits in the kernel before it looks
// whether its context ended.
const eventPoll = 100 * time.Millisecond

// ListenDestroy subscribes to destroy events.
func ListenDestroy() (*Events, error) { return Listen(GroupDestroy) }

// Listen subscribes to the given event groups in the current thread's
// network namespace.
func Listen(groups ...Group) (*Events, error) {
	if len(groups) == 0 {
		return nil, errors.New("seqnat: listen: no groups")
	}
	s, err := dial(eventPoll)
	if err != nil {
		return nil, fmt.Errorf("seqnat: listen: %w", err)
	}
	// Best effort: a larger buffer makes ENOBUFS rarer; the kernel caps it
	// at net.core.rmem_max.
	_ = unix.SetsockoptInt(s.Fd(), unix.SOL_SOCKET, unix.SO_RCVBUF, eventBufSize)
	for _, g := range groups {
		if err := unix.SetsockoptInt(s.Fd(), unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(g)); err != nil {
			s.Close()
			return nil, fmt.Errorf("seqnat: listen: join group %d: %w", g, err)
		}
	}
	return &Events{sock: s}, nil
}

// Close ends the subscription.
func (ev *Events) Close() error {
	if err := ev.sock.Close(); err != nil {
		return fmt.Errorf("seqnat: events: close: %w", err)
	}
	return nil
}

// Receive waits for the next datagram of events and returns the events in
// it. It returns ctx.Err() when ctx ends first (within eventPoll). When
// the kernel dropped events because the socket buffer was full, the error
// matches unix.ENOBUFS: the subscription stays usable, but the caller
// should resynchronise with Conn.List.
func (ev *Events) Receive(ctx context.Context) ([]Event, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dgram, err := ev.sock.read()
		if isTimeout(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("seqnat: events: %w", err)
		}
		evs, err := decodeEvents(dgram)
		if err != nil {
			return nil, fmt.Errorf("seqnat: events: %w", err)
		}
		if len(evs) > 0 {
			return evs, nil
		}
	}
}

// decodeEvents decodes the ctnetlink messages of one event datagram.
func decodeEvents(b []byte) ([]Event, error) {
	var evs []Event
	_, err := walkMessages(b, func(h nlHeader, body []byte) (bool, error) {
		if h.typ>>8 != nfnlSubsysCTNetlink {
			return false, nil
		}
		var t EventType
		switch h.typ & 0xff {
		case ctMsgNew:
			t = EventUpdate
			if h.flags&(unix.NLM_F_CREATE|unix.NLM_F_EXCL) != 0 {
				t = EventNew
			}
		case ctMsgDelete:
			t = EventDestroy
		default:
			return false, nil
		}
		e, err := decodeEntry(body)
		if err != nil {
			return true, err
		}
		evs = append(evs, Event{Type: t, Entry: e})
		return false, nil
	})
	return evs, err
}
